//! A private network for the lock nodes, so the nemesis can cut links
//! between them: each node runs in a network namespace of its own with one
//! address (`10.214.N.i` on its loopback, N from the run's PID), joined to every other node and
//! to this host by point-to-point veth pairs with a route per peer. Nothing
//! is bridged, so the host's firewall (Docker's `FORWARD DROP`) never sees
//! the traffic, and nothing leaves these namespaces.
//!
//! A partition is a set of `iptables` rules inside the namespaces: a link
//! cut both ways drops the peer's packets in and out; a link cut one way
//! drops only connections the node itself opens to the peer (conntrack's
//! original direction), so the peer can still call it and be answered. The
//! host (the gateway, the clients) always reaches every node.
//!
//! Needs root (`ip netns`, `iptables`); [`Net::create`] says so if not.
//! Dropping a [`Net`] deletes its namespaces, and with them every veth.

use std::process::Command;

/// The first two octets of the nodes' addresses; the third is the run's
/// own (from its PID), so concurrent runs on one host do not collide.
const NETWORK: &str = "10.214";

/// The namespaces of one run.
#[derive(Debug)]
pub struct Net {
    tag: String,
    nodes: usize,
    /// `10.214.N`: node `i` is `10.214.N.i`, the host `10.214.N.254`.
    prefix: String,
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Net {
    /// Create `nodes` namespaces, fully meshed, reachable from this host.
    pub fn create(nodes: usize) -> anyhow::Result<Net> {
        let pid = std::process::id();
        let tag = format!("dsc{pid}");
        let prefix = format!("{NETWORK}.{}", pid % 250);
        let net = Net {
            tag: tag.clone(),
            nodes,
            prefix: prefix.clone(),
        };
        let host = net.host();
        let (host, prefix) = (host.as_str(), prefix.as_str());
        let ns = |i: usize| format!("{tag}-{i}");
        for i in 1..=nodes {
            let (n, me) = (ns(i), format!("{prefix}.{i}"));
            run(&["ip", "netns", "add", &n])?;
            net.exec(i, &["ip", "link", "set", "lo", "up"])?;
            net.exec(i, &["ip", "addr", "add", &format!("{me}/32"), "dev", "lo"])?;
            let host_end = format!("{tag}r{i}");
            run(&[
                "ip", "link", "add", &host_end, "type", "veth", "peer", "name", "host", "netns", &n,
            ])?;
            run(&["ip", "link", "set", &host_end, "up"])?;
            net.exec(i, &["ip", "link", "set", "host", "up"])?;
            net.exec(
                i,
                &[
                    "ip",
                    "route",
                    "add",
                    &format!("{host}/32"),
                    "dev",
                    "host",
                    "src",
                    &me,
                ],
            )?;
        }
        // The host's address lives on the first veth, so it goes with it.
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{host}/32"),
            "dev",
            &format!("{tag}r1"),
        ])?;
        for i in 1..=nodes {
            run(&[
                "ip",
                "route",
                "add",
                &format!("{prefix}.{i}/32"),
                "dev",
                &format!("{tag}r{i}"),
                "src",
                host,
            ])?;
        }
        for i in 1..=nodes {
            for j in i + 1..=nodes {
                let (pi, pj) = (format!("p{i}"), format!("p{j}"));
                run(&[
                    "ip",
                    "link",
                    "add",
                    &pj,
                    "netns",
                    &ns(i),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &pi,
                    "netns",
                    &ns(j),
                ])?;
                net.exec(i, &["ip", "link", "set", &pj, "up"])?;
                net.exec(j, &["ip", "link", "set", &pi, "up"])?;
                net.exec(
                    i,
                    &[
                        "ip",
                        "route",
                        "add",
                        &format!("{prefix}.{j}/32"),
                        "dev",
                        &pj,
                        "src",
                        &format!("{prefix}.{i}"),
                    ],
                )?;
                net.exec(
                    j,
                    &[
                        "ip",
                        "route",
                        "add",
                        &format!("{prefix}.{i}/32"),
                        "dev",
                        &pi,
                        "src",
                        &format!("{prefix}.{j}"),
                    ],
                )?;
            }
        }
        Ok(net)
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("{}.{i}", self.prefix)
    }

    /// This host's address on the network.
    fn host(&self) -> String {
        format!("{}.254", self.prefix)
    }

    /// The command prefix that runs a program inside node `i`'s namespace.
    pub fn prefix(&self, i: usize) -> Vec<String> {
        vec!["netns".into(), "exec".into(), format!("{}-{i}", self.tag)]
    }

    fn exec(&self, i: usize, args: &[&str]) -> anyhow::Result<()> {
        let ns = format!("{}-{i}", self.tag);
        let mut full = vec!["ip", "netns", "exec", &ns];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Cut the link between nodes `a` and `b` both ways.
    pub fn cut(&self, a: usize, b: usize) -> anyhow::Result<()> {
        for (x, y) in [(a, b), (b, a)] {
            let peer = self.addr(y);
            self.exec(x, &["iptables", "-A", "INPUT", "-s", &peer, "-j", "DROP"])?;
            self.exec(x, &["iptables", "-A", "OUTPUT", "-d", &peer, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Node `from` can no longer open (or use) connections to `to`; `to`
    /// can still call `from` and get its answers.
    pub fn cut_one_way(&self, from: usize, to: usize) -> anyhow::Result<()> {
        let peer = self.addr(to);
        self.exec(
            from,
            &[
                "iptables",
                "-A",
                "OUTPUT",
                "-d",
                &peer,
                "-m",
                "conntrack",
                "--ctdir",
                "ORIGINAL",
                "-j",
                "DROP",
            ],
        )
    }

    /// Node `i` loses every other node (the host still reaches it).
    pub fn isolate(&self, i: usize) -> anyhow::Result<()> {
        for j in (1..=self.nodes).filter(|j| *j != i) {
            self.cut(i, j)?;
        }
        Ok(())
    }

    /// Remove every cut.
    pub fn heal(&self) -> anyhow::Result<()> {
        for i in 1..=self.nodes {
            self.exec(i, &["iptables", "-F"])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 1..=self.nodes {
            let _ = run(&["ip", "netns", "del", &format!("{}-{i}", self.tag)]);
        }
    }
}
