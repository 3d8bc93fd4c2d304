//! nginx as a reverse proxy in front of one node: the yardstick for what a
//! proxy hop should cost. Its configuration is what a careful operator
//! would write for this: upstream keep-alive connections, HTTP/1.1 to the
//! upstream, no access log, one worker per core.

use std::path::Path;
use std::process::Command;

use super::Proc;

/// A running nginx, proxying `addr` to its upstream.
pub struct Proxy {
    pub addr: String,
    _proc: Proc,
}

pub async fn start(dir: &Path, upstream: &str) -> anyhow::Result<Proxy> {
    let bin = super::find(&["nginx"])
        .ok_or_else(|| anyhow::anyhow!("no nginx (scripts/install-bench-deps.sh installs it)"))?;
    std::fs::create_dir_all(dir.join("tmp"))?;
    // nginx reads a relative -c path under its -p prefix: both absolute.
    let dir = &std::path::absolute(dir)?;
    let port = common::port::reserve()?;
    let addr = format!("127.0.0.1:{port}");
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    upstream node {{
        server {upstream};
        keepalive 128;
    }}
    server {{
        listen {addr};
        location / {{
            proxy_pass http://node;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let mut cmd = Command::new(bin);
    cmd.arg("-p").arg(dir).arg("-c").arg(&path);
    let proc = Proc::spawn(cmd, dir, "nginx")?;
    super::wait_port(&addr, std::time::Duration::from_secs(10)).await?;
    Ok(Proxy { addr, _proc: proc })
}
