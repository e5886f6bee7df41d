//! The console as a user works it: the runner binary (`cargo run`) driven through QEMU's serial
//! port the way a terminal would, answer by answer.
//!
//! - `scripted_session_covers_every_command`: `--console` without a terminal, one command at a
//!   time (waiting for each prompt), with line editing, history, type-ahead, an aborted
//!   `stress`, every command and its refusals, a memmap picture checked against `/proc`, and
//!   the end of input as the end of the session.
//! - `on_a_terminal_without_qemu_the_offered_install_ends_at_the_prompt`: a real terminal (a pty
//!   from `script`), a machine "without QEMU" (a `PATH` with a fake `apt-get` that provides it),
//!   the offer accepted, the console used, Ctrl-C through the raw terminal, `exit`.
//! - `without_a_terminal_a_plain_run_is_the_demo`: today's behaviour, unchanged.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use memkernel::procfs;

/// How long one answer may take (TCG on a busy machine; a hang fails instead of blocking).
const ANSWER: Duration = Duration::from_secs(240);

/// A running session: what it printed so far on stdout (without carriage returns: a pty turns
/// the kernel's CR LF into CR CR LF) and how far the test has read it, what it printed on
/// stderr (the runner's own lines, which interleave with stdout in any order), and its input.
struct Session {
    child: Child,
    input: Option<ChildStdin>,
    rx: Receiver<(bool, Vec<u8>)>,
    out: String,
    pos: usize,
    err: String,
}

impl Session {
    fn spawn(mut cmd: Command) -> Session {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the runner starts");
        let (tx, rx) = channel();
        for (is_err, mut pipe) in [
            (false, Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>),
            (true, Box::new(child.stderr.take().unwrap())),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    if tx.send((is_err, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            });
        }
        let input = child.stdin.take();
        Session { child, input, rx, out: String::new(), pos: 0, err: String::new() }
    }

    fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n---- stdout so far ----\n{}\n---- stderr ----\n{}", self.out, self.err)
    }

    /// Takes one chunk of output, waiting until `deadline`; false on timeout.
    fn take(&mut self, deadline: Instant) -> bool {
        match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((is_err, bytes)) => {
                let text = String::from_utf8_lossy(&bytes).replace('\r', "");
                if is_err { &mut self.err } else { &mut self.out }.push_str(&text);
                true
            }
            Err(_) => false,
        }
    }

    /// Waits for `needle` on stderr (the runner's lines).
    fn wait_err(&mut self, needle: &str) {
        let deadline = Instant::now() + ANSWER;
        while !self.err.contains(needle) {
            if !self.take(deadline) {
                self.fail(&format!("no `{needle}` on stderr within {} s", ANSWER.as_secs()));
            }
        }
    }

    /// Reads until `needle` appears after what was read so far; returns the text up to and
    /// including it.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + ANSWER;
        loop {
            if let Some(i) = self.out[self.pos..].find(needle) {
                let end = self.pos + i + needle.len();
                let text = self.out[self.pos..end].to_string();
                self.pos = end;
                return text;
            }
            if !self.take(deadline) {
                self.fail(&format!("no `{}` within {} s", needle.escape_debug(), ANSWER.as_secs()));
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let input = self.input.as_mut().expect("input open");
        input.write_all(bytes).and_then(|_| input.flush()).expect("the runner takes input");
    }

    /// Types `line` and Enter; returns the answer (the lines between the echo and the next
    /// prompt).
    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r").as_bytes());
        self.answer()
    }

    /// The answer to the line just sent: from after the echoed line to the next prompt.
    fn answer(&mut self) -> String {
        let text = self.wait_for("\nmm> ");
        let text = text.strip_suffix("mm> ").unwrap();
        text.split_once('\n').map_or("", |(_echo, rest)| rest).to_string()
    }

    /// `cmd`, and the answer must contain every one of `needles`.
    fn expect(&mut self, line: &str, needles: &[&str]) -> String {
        let a = self.cmd(line);
        for n in needles {
            if !a.contains(n) {
                self.fail(&format!("`{line}`: the answer lacks `{n}`:\n{a}"));
            }
        }
        a
    }

    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + ANSWER;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the runner") {
                // Drain what is left of the output.
                while self.take(Instant::now() + Duration::from_millis(500)) {}
                return status.code();
            }
            if Instant::now() > deadline {
                self.fail("the runner did not exit");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A failed test must not leave QEMU running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first `0x...` word after `after` in `text`.
fn hex_after(text: &str, after: &str) -> u64 {
    let i = text.find(after).unwrap_or_else(|| panic!("no `{after}` in:\n{text}")) + after.len();
    let rest = &text[i..];
    let start = rest.find("0x").unwrap_or_else(|| panic!("no address after `{after}` in:\n{text}"));
    let hex: String = rest[start + 2..].chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    u64::from_str_radix(&hex, 16).unwrap()
}

fn runner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memkernel"))
}

fn temp_dir(what: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("memkernel-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn scripted_session_covers_every_command() {
    let dir = temp_dir("console");
    let mut cmd = runner();
    cmd.args(["--console", "--smp", "2", "--timeout", "600"]).current_dir(&dir);
    let mut s = Session::spawn(cmd);

    // The summary, then the prompt.
    let summary = s.wait_for("\nmm> ");
    for line in ["memkernel: 2 CPUs, RAM ", "\nzones:   DMA ", "\nbuddy:   ", "\nslab:    ", "\nvmalloc: ["] {
        assert!(summary.contains(line), "summary lacks `{line}`:\n{summary}");
    }
    assert!(
        !summary.contains("Handling Segment"),
        "the console boots without the bootloader's log:\n{summary}"
    );

    let help = s.cmd("help");
    for c in [
        "cat /proc/FILE",
        "kmalloc SIZE",
        "kzalloc",
        "kfree ADDR",
        "krealloc ADDR SIZE",
        "ksize ADDR",
        "alloc_pages ORDER",
        "free_pages ADDR ORDER",
        "vmalloc SIZE",
        "vfree ADDR",
        "vmap",
        "vunmap ADDR",
        "kmem_cache_create NAME SIZE",
        "kmem_cache_alloc NAME",
        "kmem_cache_free NAME ADDR",
        "kmem_cache_destroy NAME",
        "stress OPS [CPUS]",
        "sysctl vm.min_free_kbytes",
        "failslab [ATTR=VALUE",
        "fail_page_alloc [ATTR=VALUE",
        "echo VALUE > /sys/kernel/debug/failslab/ATTR",
        "memmap",
        "exit",
    ] {
        assert!(help.contains(c), "help lacks `{c}`:\n{help}");
    }

    // Every /proc file, in Linux's format.
    let buddy = s.cmd("cat /proc/buddyinfo");
    let zones = procfs::parse_buddyinfo(&buddy).unwrap_or_else(|e| s.fail(&e));
    assert!(zones.iter().any(|z| z.zone == "DMA32"));
    procfs::parse_zoneinfo(&s.cmd("cat /proc/zoneinfo")).unwrap_or_else(|e| s.fail(&e));
    procfs::parse_slabinfo(&s.cmd("cat /proc/slabinfo")).unwrap_or_else(|e| s.fail(&e));
    let vmallocinfo = s.cmd("cat /proc/vmallocinfo");
    let areas = procfs::parse_vmallocinfo(&vmallocinfo).unwrap_or_else(|e| s.fail(&e));
    let meminfo = procfs::parse_meminfo(&s.cmd("cat /proc/meminfo")).unwrap_or_else(|e| s.fail(&e));
    assert!(meminfo["MemTotal"] > 0);
    s.expect("cat /proc/nonesuch", &["cat: /proc/nonesuch: No such file or directory"]);

    // The question of the issue.
    let a = s.expect(
        "kmalloc 3000 GFP_DMA",
        &["kmalloc(3000, GFP_DMA) = 0x", "ksize 4096, dma-kmalloc-4k", "(zone DMA)"],
    );
    let dma = hex_after(&a, "= ");
    // Line editing: a typo erased with Backspace; then the line again from the history.
    s.send(b"kzallox\x7fc 100\r");
    let z1 = s.answer();
    assert!(z1.contains("kzalloc(100, GFP_KERNEL) = 0x") && z1.contains("ksize 128, kmalloc-128"), "{z1}");
    s.send(b"\x1b[A\r");
    let z2 = s.answer();
    assert!(z2.contains("kzalloc(100, GFP_KERNEL) = 0x"), "Up gives the last line back:\n{z2}");
    let (p1, p2) = (hex_after(&z1, "= "), hex_after(&z2, "= "));
    assert_ne!(p1, p2);
    s.expect(&format!("ksize {p1:#x}"), &[&format!("ksize({p1:#x}) = 128")]);
    let moved = s.expect(&format!("krealloc {p1:#x} 300"), &["(moved): ksize 512"]);
    let p3 = hex_after(&moved, "= ");
    s.expect(&format!("krealloc {p3:#x} 400"), &["(the same block): ksize 512"]);

    // kfree, a double free and garbage: the API's one-line reports.
    s.expect(&format!("kfree {dma:#x}"), &["freed (4096 bytes)"]);
    s.expect(
        &format!("kfree {dma:#x}"),
        &["[ERROR] kfree refused at ", &format!("dma-kmalloc-4k: double free of {dma:#x}")],
    );
    s.expect("kfree 0x1234", &["kfree refused at ", "no slab or kmalloc-large block owns this address"]);
    s.expect("kmalloc 100 GFP_BOGUS", &["`GFP_BOGUS` is not a GFP flag"]);
    s.expect("kmalloc 5M", &["kmalloc(5242880) failure"]);
    s.expect("kmalloc 5M GFP_KERNEL|__GFP_NOWARN", &["failed (no warning: __GFP_NOWARN)"]);

    // The page allocator.
    let pages = s.expect("alloc_pages 2", &["alloc_pages(GFP_KERNEL, 2) = 0x", "16 KiB (zone DMA32)"]);
    let pa = hex_after(&pages, "= ");
    s.expect(
        &format!("free_pages {pa:#x} 1"),
        &["__free_pages refused at ", "was allocated with order 2 but freed with order 1"],
    );
    s.expect(&format!("free_pages {pa:#x} 2"), &["freed 16 KiB"]);
    s.expect("alloc_pages 11", &["page allocation failure: order:11"]);

    // vmalloc and vmap.
    let v = s.expect("vmalloc 5000", &["vmalloc(5000) = 0xffffc9", "2 pages"]);
    let va = hex_after(&v, "= ");
    s.expect(&format!("vfree {:#x}", va + 0x1000), &["vfree refused at "]);
    s.expect(&format!("vfree {va:#x}"), &["freed"]);
    let m = s.expect("vmap 3", &["vmap(3 pages at phys", "12 KiB contiguous"]);
    let ma = hex_after(&m, ") = ");
    s.expect(&format!("vunmap {ma:#x}"), &["unmapped; its 3 pages freed"]);
    // The kernel's own memory (CPU 1's vmalloc'd stack) is not the console's to free.
    let stack = areas
        .iter()
        .find(|a| a.rest.contains(" vmalloc"))
        .unwrap_or_else(|| s.fail(&format!("no vmalloc area for CPU 1's stack:\n{vmallocinfo}")));
    s.expect(&format!("vfree {:#x}", stack.start), &["was not handed out by this console"]);
    // The local APIC's registers are an ioremap area (xAPIC mode): vfree names the right call.
    if let Some(apic) = areas.iter().find(|a| a.rest.contains(" ioremap")) {
        s.expect(&format!("vfree {:#x}", apic.start), &["is an ioremap area: release it with iounmap"]);
    }

    // A cache of our own.
    s.expect("kmem_cache_create demo 100", &["cache demo: 104-byte slots", "objects per slab"]);
    s.expect(
        "kmem_cache_create odd 100 3",
        &["kmem_cache_create refused at ", "alignment is not a power of two"],
    );
    let o = s.expect("kmem_cache_alloc demo", &["kmem_cache_alloc(demo, GFP_KERNEL) = 0x"]);
    let oa = hex_after(&o, "= ");
    // 6.12's report (mm/slub.c list_slab_objects/slab_err, mm/slab_common.c kmem_cache_destroy).
    s.expect(
        "kmem_cache_destroy demo",
        &[
            "BUG demo (Not tainted): Objects remaining in demo on __kmem_cache_shutdown()",
            "kmem_cache_destroy demo: Slab cache still has objects when called from kernel/src/console/",
            "WARNING: CPU: 0 at mm/slab_common.c kmem_cache_destroy",
        ],
    );
    s.expect(
        &format!("kmem_cache_free demo {:#x}", oa + 8),
        &["kmem_cache_free refused at ", "interior pointer"],
    );
    s.expect(&format!("kmem_cache_free demo {oa:#x}"), &["freed"]);
    s.expect("kmem_cache_destroy demo", &["kmem_cache_destroy(demo): destroyed"]);
    s.expect("kmem_cache_alloc demo", &["no cache `demo` was created at this console"]);

    // Watermarks, as Linux's sysctl.
    let cur = s.cmd("sysctl vm.min_free_kbytes");
    let kb: u64 = cur
        .trim()
        .strip_prefix("vm.min_free_kbytes = ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| s.fail(&cur));
    let set = s.expect(
        "sysctl vm.min_free_kbytes=16384",
        &["vm.min_free_kbytes = 16384", "zone DMA32 : watermarks min "],
    );
    let min32 = set
        .split("zone DMA32 : watermarks min ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_string();
    let zi = procfs::parse_zoneinfo(&s.cmd("cat /proc/zoneinfo")).unwrap_or_else(|e| s.fail(&e));
    let dma32 = zi.iter().find(|z| z.zone == "DMA32").unwrap();
    assert_eq!(dma32.fields["min"].to_string(), min32, "zoneinfo shows the new watermark");
    s.expect(
        "sysctl vm.min_free_kbytes=lots",
        &["sysctl: setting key \"vm.min_free_kbytes\": Invalid argument"],
    );
    s.expect(
        "sysctl vm.swappiness",
        &["sysctl: cannot stat /proc/sys/vm/swappiness: No such file or directory"],
    );
    s.expect(&format!("sysctl vm.min_free_kbytes={kb}"), &[&format!("vm.min_free_kbytes = {kb}")]);

    // Fault injection, with Linux's debugfs files and the shorthand.
    s.expect(
        "failslab",
        &["failslab: off (probability 0)", "ignore-gfp-wait     Y", "times               1"],
    );
    s.expect(
        "failslab probability=100 times=2 ignore-gfp-wait=N verbose=1",
        &["failslab: on (0 failures injected so far)", "probability         100"],
    );
    s.expect(
        "kmalloc 64",
        &[
            "FAULT_INJECTION: forcing a failure.",
            "name failslab, interval 1, probability 100, space 0, times 1",
            "kmalloc failed: failed by fault injection (failslab)",
        ],
    );
    s.expect(
        "kzalloc 64 GFP_KERNEL|__GFP_NOWARN",
        &["kzalloc failed (no warning: __GFP_NOWARN): failed by fault"],
    );
    let fi = s.expect("kmalloc 64", &["kmalloc(64, GFP_KERNEL) = 0x"]);
    s.expect(&format!("kfree {:#x}", hex_after(&fi, "= ")), &["freed"]);
    s.expect("cat /sys/kernel/debug/failslab/times", &["0"]);
    s.expect("echo 101 > /sys/kernel/debug/failslab/probability", &["echo: write error: Invalid argument"]);
    s.expect("echo 1 > /sys/kernel/debug/failslab/nonesuch", &["No such file or directory"]);
    s.expect("cat /sys/kernel/debug/failslab", &["Is a directory"]);
    s.cmd("echo 0 > /sys/kernel/debug/fail_page_alloc/min-order");
    s.cmd("echo N > /sys/kernel/debug/fail_page_alloc/ignore-gfp-wait");
    s.cmd("echo -1 > /sys/kernel/debug/fail_page_alloc/times");
    s.cmd("echo 100 > /sys/kernel/debug/fail_page_alloc/probability");
    s.expect("cat /sys/kernel/debug/fail_page_alloc/min-order", &["0"]);
    s.expect("alloc_pages 0", &["FAULT_INJECTION: forcing a failure.", "name fail_page_alloc, interval 1"]);
    s.expect("fail_page_alloc off", &["fail_page_alloc: off (probability 0) ("]);
    s.expect("cat /sys/kernel/slab/kmalloc-64/failslab", &["0"]);
    s.cmd("echo 1 > /sys/kernel/slab/kmalloc-64/failslab");
    s.expect("cat /sys/kernel/slab/kmalloc-64/failslab", &["1"]);
    s.expect("echo 1 > /sys/kernel/slab/nonesuch/failslab", &["No such file or directory"]);
    s.expect("failslab bogus=1", &["failslab: bogus=1: no such attribute"]);
    s.expect("failslab off", &["failslab: off (probability 0)"]);

    // The soak workload, to the end, then aborted with Ctrl-C while it runs.
    s.expect(
        "stress 3000 2",
        &["stress: 6000 of 6000 operations", "back to the starting figures", " 0 damaged, 0 failed"],
    );
    s.send(b"stress 100000000 2\r");
    s.wait_for("% (");
    s.send(b"\x03");
    let aborted = s.answer();
    for n in ["(stopped by Ctrl-C)", "back to the starting figures", " 0 damaged, 0 failed"] {
        assert!(aborted.contains(n), "the aborted stress lacks `{n}`:\n{aborted}");
    }

    // The picture, checked against /proc of the same moment (nothing allocates in between).
    // Page 0 is firmware-reserved (6.12: e820 "usable ==> reserved" of the first page), not memblock.
    s.expect("memmap console.svg", &["$ memmap console.svg", "\nrun 1R "]);
    s.wait_err("runner: wrote ");
    let buddy = procfs::parse_buddyinfo(&s.cmd("cat /proc/buddyinfo")).unwrap_or_else(|e| s.fail(&e));
    let mem = procfs::parse_meminfo(&s.cmd("cat /proc/meminfo")).unwrap_or_else(|e| s.fail(&e));
    let svg = std::fs::read_to_string(dir.join("console.svg"))
        .unwrap_or_else(|e| s.fail(&format!("console.svg: {e}")));
    let panels = memkernel::memmap::drawn_cells(&svg).unwrap_or_else(|e| s.fail(&e));
    let (ppc, cells) = &panels[0];
    assert_eq!(*ppc, 1);
    assert_eq!(cells.get("free").copied().unwrap_or(0) * 4, mem["MemFree"], "free cells vs MemFree");
    let buddy_pages: u64 = buddy.iter().map(|z| z.free_pages()).sum();
    assert_eq!(cells["free"], buddy_pages, "free cells vs buddyinfo");

    // Type-ahead: two lines at once, both answered in order.
    s.send(format!("ksize {p2:#x}\rallocations\r").as_bytes());
    let first = s.answer();
    assert!(first.contains(&format!("ksize({p2:#x}) = 128")), "{first}");
    let held = s.answer();
    assert!(
        held.contains(&format!("{p2:#x}  kmalloc, 100 bytes")) && held.contains("kmalloc, 400 bytes"),
        "{held}"
    );

    // The end of input ends the session (Ctrl-D at the prompt): what was left, success.
    drop(s.input.take());
    let status = s.wait_exit();
    let tail = &s.out[s.pos..];
    assert!(
        tail.contains("exit\nexit: left allocated at the console: 2 allocations and 0 caches:"),
        "{tail}"
    );
    assert!(s.err.contains("runner: kernel reported success"), "{}", s.err);
    assert_eq!(status, Some(0), "{}", s.out);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `PATH` directory with a fake `apt-get` (and `sudo`) that "installs" QEMU by linking the real
/// one in, and OVMF by creating the file `MEMKERNEL_OVMF` names; it logs its arguments.
fn fake_debian(dir: &std::path::Path, real_qemu: &std::path::Path, ovmf: &std::path::Path) {
    let log = dir.join("apt.log");
    let apt = format!(
        "#!/bin/sh\necho \"$@\" >> '{}'\nif [ \"$1\" = install ]; then\n  /bin/ln -sf '{}' '{}'\n  : > '{}'\nfi\n",
        log.display(),
        real_qemu.display(),
        dir.join("qemu-system-x86_64").display(),
        ovmf.display()
    );
    for (name, body) in [("apt-get", apt.as_str()), ("sudo", "#!/bin/sh\nexec \"$@\"\n")] {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn on_a_terminal_without_qemu_the_offered_install_ends_at_the_prompt() {
    let find = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    let script =
        find("script").expect("`script` (util-linux, Debian's bsdutils) gives this test its terminal");
    let qemu = memkernel::setup::find_qemu().expect("the machine running the tests has QEMU");
    let dir = temp_dir("fresh");
    let ovmf = dir.join("OVMF.fd");
    fake_debian(&dir, &qemu, &ovmf);
    // `script` runs the runner on a new pty (stdin and stdout a terminal); `-e` returns its
    // status. The runner sees a PATH without QEMU and no OVMF.
    let mut cmd = Command::new(script);
    cmd.args(["-qfec", &format!("{} --timeout 600", env!("CARGO_BIN_EXE_memkernel")), "/dev/null"])
        .env("PATH", &dir)
        .env("MEMKERNEL_OVMF", &ovmf)
        .env_remove("MEMKERNEL_QEMU");
    let mut s = Session::spawn(cmd);
    let offer = s.wait_for("[Y/n] ");
    assert!(offer.contains("qemu-system-x86_64 is not installed, nor the OVMF firmware"), "{offer}");
    assert!(offer.contains("apt-get install qemu-system-x86 ovmf"), "{offer}");
    s.send(b"y\n");
    s.wait_for("runner: installed; going on");
    s.wait_for("\nmm> ");
    // The terminal is raw now: Enter is CR, nothing is echoed but by the kernel.
    s.expect("kmalloc 64", &["kmalloc(64, GFP_KERNEL) = 0x", "kmalloc-64"]);
    // Ctrl-C is a byte for the kernel (QEMU's chardev has signal=off), not SIGINT for QEMU.
    s.send(b"stress 100000000\r");
    s.wait_for("% (");
    s.send(b"\x03");
    let aborted = s.answer();
    assert!(aborted.contains("(stopped by Ctrl-C)"), "{aborted}");
    s.send(b"exit\r");
    let status = s.wait_exit();
    assert!(s.out.contains("exit: left allocated at the console: 1 allocation and 0 caches:"), "{}", s.out);
    assert_eq!(status, Some(0), "{}", s.out);
    let log = std::fs::read_to_string(dir.join("apt.log")).unwrap_or_default();
    assert!(log.lines().any(|l| l == "install qemu-system-x86 ovmf"), "apt-get was run as: {log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_a_terminal_a_plain_run_is_the_demo() {
    let out = runner().stdin(Stdio::null()).output().expect("the runner starts");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}\nstdout:\n{stdout}");
    assert!(
        stderr.contains("runner: booting BIOS with 1G RAM\n"),
        "no console word on the command line: {stderr}"
    );
    for line in [
        "[INFO ] memkernel booting (cmdline: \"\")",
        "BIOS-provided physical RAM map (via the bootloader):",
        "---- memory statistics after boot ----",
        "---- demo: vmalloc and vmap ----",
        "---- memory statistics after the demo workload ----",
        "[INFO ] demo finished",
    ] {
        assert!(stdout.contains(line), "the demo's log lacks `{line}`:\n{stdout}");
    }
    assert!(!stdout.contains("mm> ") && !stdout.contains("$ memmap"), "no console, no map:\n{stdout}");
    assert!(!stdout.contains("INFO : "), "the bootloader's INFO lines are off by default:\n{stdout}");
}

#[test]
fn log_debug_brings_the_bootloaders_info_lines_back() {
    let out = runner()
        .args(["--demo", "--cmdline", "log=debug"])
        .stdin(Stdio::null())
        .output()
        .expect("the runner starts");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}\nstdout:\n{stdout}");
    for line in ["INFO : Jumping to kernel entry point", "INFO : Map physical memory"] {
        assert!(stdout.contains(line), "log=debug shows the bootloader's `{line}`:\n{stdout}");
    }
}
