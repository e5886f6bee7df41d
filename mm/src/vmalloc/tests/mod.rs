//! Host tests of the vmalloc logic.
