//! A throwaway Kubernetes control plane on loopback for the host tests: Debian's etcd and the
//! 1.20 kube-apiserver that `cargo xtask k8s` builds and caches, on free ports in a temp dir.
//! It is set up like a cluster's: RBAC and Node authorization on, a ServiceAccount signing key
//! (TokenRequest works, so tests act as a ServiceAccount), and a kubeconfig per identity for
//! kubectl. Stopped and removed on drop; the children die with the test thread if it is killed.
//!
//! Host tests include this file with `#[path]` (the crate's library is the VM suite).

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where `cargo xtask test` (or `cargo xtask k8s`) says the binaries are.
pub const BIN_ENV: &str = "ENFORCER_K8S_BIN";
/// The apiserver's ServiceAccount token issuer (and so the tokens' default audience).
const ISSUER: &str = "https://kubernetes.default.svc";
/// The node whose kubelet identity [`ControlPlane::node`] holds.
pub const NODE: &str = "node1";
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The directory holding `etcd`, `kube-apiserver` and `kubectl`, from [`BIN_ENV`].
pub fn bin_dir() -> Result<PathBuf> {
    let dir = std::env::var_os(BIN_ENV).with_context(|| {
        format!(
            "{BIN_ENV} is not set: run these tests through `cargo xtask test`, or build the \
             control plane with `cargo xtask k8s` and set {BIN_ENV} to the directory it prints"
        )
    })?;
    Ok(PathBuf::from(dir))
}

/// etcd and kube-apiserver, running.
pub struct ControlPlane {
    dir: PathBuf,
    bin: PathBuf,
    etcd: Child,
    apiserver: Child,
    /// What the apiserver was started with, to start it again (an outage).
    #[allow(
        dead_code,
        reason = "host_k8s_agent restarts the apiserver; host_k8s shares the file"
    )]
    apiserver_args: Vec<std::ffi::OsString>,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// A kubeconfig for the admin (`system:masters`).
    pub admin: PathBuf,
    /// A kubeconfig for the kubelet of node [`NODE`] (`system:node:<name>` in `system:nodes`),
    /// for tests that play the kubelet: the Node authorizer lets it write its own Node and the
    /// status of pods bound to it, nothing else.
    pub node: PathBuf,
    /// From starting etcd to the apiserver's `/readyz` answering ok.
    pub ready_after: Duration,
}

impl ControlPlane {
    /// Starts etcd and the apiserver from [`bin_dir`] and waits until `/readyz` is ok.
    pub fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let dir = fresh_dir()?;
        let (admin_token, node_token) = (random_token()?, random_token()?);
        fs::write(
            dir.join("tokens.csv"),
            // token,user,uid,"groups"
            format!(
                "{admin_token},admin,admin,\"system:masters\"\n\
                 {node_token},system:node:{NODE},{NODE},\"system:nodes\"\n"
            ),
        )?;
        // The key ServiceAccount tokens are signed with, and its public half that checks them.
        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        run_ok(
            Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(&sa_key)
                .arg("2048"),
        )?;
        run_ok(
            Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(&sa_key)
                .arg("-out")
                .arg(&sa_pub),
        )?;

        // Held until just before each spawn so the three ports differ.
        let ports = [free_port()?, free_port()?, free_port()?];
        let [client, peer, secure] = ports.each_ref().map(|l| l.local_addr().map(|a| a.port()));
        let (client, peer, secure) = (client?, peer?, secure?);
        let started = Instant::now();
        let etcd_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        drop(ports);
        let etcd = spawn_logged(
            Command::new(bin.join("etcd"))
                .arg("--name=default")
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=default={peer_url}")),
            &dir.join("etcd.log"),
        )?;
        let mut apiserver_command = Command::new(bin.join("kube-apiserver"));
        apiserver_command
            .arg(format!("--etcd-servers={etcd_url}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={secure}"))
            // 1.20 still has the unauthenticated port; it must be off.
            .arg("--insecure-port=0")
            // The apiserver writes a self-signed CA and serving certificate here.
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .arg(format!(
                "--token-auth-file={}",
                dir.join("tokens.csv").display()
            ))
            .arg("--authorization-mode=Node,RBAC")
            .arg("--enable-admission-plugins=NodeRestriction")
            // No controller-manager makes ServiceAccount token secrets, so this plugin would
            // refuse every pod; tests get tokens through TokenRequest instead.
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--allow-privileged=true")
            .arg(format!("--service-account-issuer={ISSUER}"))
            .arg(format!("--service-account-key-file={}", sa_pub.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                sa_key.display()
            ))
            .arg("--service-cluster-ip-range=10.96.0.0/24");
        let apiserver_args = apiserver_command
            .get_args()
            .map(ToOwned::to_owned)
            .collect();
        let apiserver = spawn_logged(&mut apiserver_command, &dir.join("apiserver.log"))?;
        let server = format!("https://127.0.0.1:{secure}");
        let mut plane = ControlPlane {
            admin: dir.join("admin.kubeconfig"),
            node: dir.join("node.kubeconfig"),
            dir,
            bin,
            etcd,
            apiserver,
            apiserver_args,
            server,
            ready_after: Duration::ZERO,
        };
        plane.write_kubeconfig(&plane.admin, "admin", &admin_token)?;
        plane.write_kubeconfig(&plane.node, &format!("system:node:{NODE}"), &node_token)?;
        plane.wait_ready(started)?;
        Ok(plane)
    }

    /// An apiserver outage: kills it, waits `down`, starts it again on the same port and etcd,
    /// and waits until it is ready.
    #[allow(
        dead_code,
        reason = "host_k8s_agent restarts the apiserver; host_k8s shares the file"
    )]
    pub fn restart_apiserver(&mut self, down: Duration) -> Result<()> {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
        thread::sleep(down);
        let log = self.dir.join("apiserver-restarted.log");
        self.apiserver = spawn_logged(
            Command::new(self.bin.join("kube-apiserver")).args(&self.apiserver_args),
            &log,
        )?;
        self.wait_ready(Instant::now())
    }

    /// Polls `/readyz` until it is ok.
    fn wait_ready(&mut self, started: Instant) -> Result<()> {
        loop {
            if let Some(status) = self.apiserver.try_wait()? {
                bail!(
                    "kube-apiserver exited ({status}):\n{}",
                    self.log_tail("apiserver.log")
                );
            }
            if let Some(status) = self.etcd.try_wait()? {
                bail!("etcd exited ({status}):\n{}", self.log_tail("etcd.log"));
            }
            // The CA appears once the apiserver has written its certificates.
            if self.ca().exists() {
                let out = self.kubectl().args(["get", "--raw=/readyz"]).output()?;
                if out.status.success() && out.stdout.starts_with(b"ok") {
                    self.ready_after = started.elapsed();
                    return Ok(());
                }
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "kube-apiserver not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log_tail("apiserver.log")
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The self-signed CA (and serving certificate) the apiserver wrote at start.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("certs/apiserver.crt")
    }

    /// Writes a kubeconfig that talks to this apiserver as `user` with a bearer token.
    pub fn write_kubeconfig(&self, path: &Path, user: &str, token: &str) -> Result<()> {
        let config = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: {user}\n  user:\n    token: {token}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\n\
             current-context: test\n",
            self.server,
            self.ca().display()
        );
        fs::write(path, config).with_context(|| format!("cannot write {}", path.display()))
    }

    /// A kubeconfig for a ServiceAccount, with a token from the TokenRequest API.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let request = self
            .dir
            .join(format!("token-request-{namespace}-{name}.json"));
        fs::write(
            &request,
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":3600}}"#,
        )?;
        let out = self.kubectl_ok(&[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"),
            "-f",
            &request.display().to_string(),
        ])?;
        let reply: serde_json::Value =
            serde_json::from_str(&out).context("TokenRequest answered no JSON")?;
        let token = reply["status"]["token"]
            .as_str()
            .with_context(|| format!("TokenRequest answered no token: {out}"))?;
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        self.write_kubeconfig(&path, &format!("{namespace}-{name}"), token)?;
        Ok(path)
    }

    /// kubectl (the 1.20 one built with the apiserver) with `kubeconfig`.
    pub fn kubectl_with(&self, kubeconfig: &Path) -> Command {
        let mut c = Command::new(self.bin.join("kubectl"));
        c.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .stdin(Stdio::null());
        c
    }

    /// kubectl as the admin.
    pub fn kubectl(&self) -> Command {
        self.kubectl_with(&self.admin)
    }

    /// Runs kubectl as the admin; its stdout, or an error with its stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        output_ok(self.kubectl().args(args))
    }

    /// The last lines of one of the logs, for error messages.
    pub fn log_tail(&self, name: &str) -> String {
        let log = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("control plane logs kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `cmd`; its stdout, or an error naming it with its stderr.
pub fn output_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, text(&out).1);
    }
    Ok(text(&out).0)
}

/// stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_ok(cmd: &mut Command) -> Result<()> {
    output_ok(cmd.stdin(Stdio::null())).map(drop)
}

/// A new directory under the temp dir, unique to this process and call.
fn fresh_dir() -> Result<PathBuf> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "enforcer-k8s-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn free_port() -> Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Spawns `cmd` with stdout and stderr in `log`, killed when the spawning thread ends so a
/// killed test leaves no server behind.
fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    let out = fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))
}
