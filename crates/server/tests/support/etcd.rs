//! A real etcd for side-by-side tests: one member on 127.0.0.1, free ports, its own temporary
//! directory, killed by PID when dropped. A missing or wrong etcd fails the test — an interop
//! test that skips proves nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, http_get};

pub struct Etcd {
    child: Child,
    pub endpoint: String,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd 3.4 (Debian's `etcd-server`, or `$STRATA_TEST_ETCD`) with member `name` and
    /// waits until it is healthy.
    pub fn start(name: &str) -> Self {
        Self::launch(name, None)
    }

    /// Restores `snapshot` (saved by `etcdctl snapshot save`) with `etcdctl snapshot restore`
    /// into a new single-member cluster, and starts it.
    pub fn restore(name: &str, snapshot: &Path) -> Self {
        Self::launch(name, Some(snapshot))
    }

    fn launch(name: &str, snapshot: Option<&Path>) -> Self {
        let program = binary();
        let version = Command::new(&program).arg("--version").output().unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; these tests compare Strata with etcd 3.4: install Debian's \
                 etcd-server package or set STRATA_TEST_ETCD",
                program.display()
            )
        });
        let version = String::from_utf8_lossy(&version.stdout).into_owned();
        assert!(
            version.contains("etcd Version: 3.4."),
            "these tests compare Strata with etcd 3.4, but {} is:\n{version}",
            program.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let (client_port, peer_port) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let initial_cluster = format!("{name}={peer_url}");
        if let Some(snapshot) = snapshot {
            let restored = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["snapshot", "restore"])
                .arg(snapshot)
                .args(["--name", name, "--initial-cluster", &initial_cluster])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .output()
                .expect("etcdctl (Debian's etcd-client) runs");
            assert!(restored.status.success(), "etcdctl snapshot restore: {restored:?}");
        }
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new(&program)
            .args(["--name", name])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut etcd = Self { child, endpoint, dir };
        etcd.wait_healthy(Duration::from_secs(30));
        etcd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if http_get(&self.endpoint, "/health").is_some_and(|b| b.contains(r#""health":"true""#))
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$STRATA_TEST_ETCD`, else Debian's `/usr/bin/etcd`, else the first `etcd` on PATH.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("STRATA_TEST_ETCD") {
        return PathBuf::from(path);
    }
    let debian = PathBuf::from("/usr/bin/etcd");
    if debian.is_file() {
        return debian;
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| p.is_file()))
        .unwrap_or_else(|| PathBuf::from("etcd"))
}
