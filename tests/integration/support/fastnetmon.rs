//! A real FastNetMon Community (Debian's 1.2.4) for one test: its own config in a temp dir,
//! NetFlow v5 collector on a free loopback port, usage reporting off, the gRPC API (hard-coded
//! to 127.0.0.1:50052) off unless asked for, notify script and InfluxDB export pointed at our
//! service. Stopped by PID on drop.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct FastnetmonOptions {
    /// FastNetMon's networks_list.
    pub networks: Vec<String>,
    /// notify_script_path.
    pub notify_script: PathBuf,
    /// Environment for FastNetMon (the notify script inherits it).
    pub env: Vec<(String, String)>,
    /// InfluxDB export target (our service) and its credentials.
    pub influxdb: Option<(SocketAddr, String, String)>,
    pub threshold_pps: u64,
    pub ban_time: u64,
    /// `enable_api`: the gRPC API on 127.0.0.1:50052 (a fixed port: one such test at a time).
    pub grpc_api: bool,
}

pub struct Fastnetmon {
    child: Child,
    pub netflow: SocketAddr,
    _dir: TempDir,
    pub log: PathBuf,
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free udp port")
}

fn binary() -> String {
    for p in ["/usr/sbin/fastnetmon", "/usr/bin/fastnetmon"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "fastnetmon is not installed: run the README's test command (bash tests/run.sh), which \
         installs it with apt-get"
    );
}

impl Fastnetmon {
    pub fn start(opts: FastnetmonOptions) -> Fastnetmon {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let port = free_udp_port();
        std::fs::write(d.join("networks_list"), opts.networks.join("\n") + "\n").expect("write");
        std::fs::write(d.join("networks_whitelist"), "").expect("write");
        let influx = match &opts.influxdb {
            Some((addr, user, password)) => format!(
                "influxdb = on\ninfluxdb_host = {}\ninfluxdb_port = {}\ninfluxdb_database = fastnetmon\n\
                 influxdb_push_period = 1\ninfluxdb_auth = on\ninfluxdb_user = {user}\n\
                 influxdb_password = {password}\n",
                addr.ip(),
                addr.port()
            ),
            None => "influxdb = off\n".into(),
        };
        let conf = format!(
            "logging_level = info\nlogging_local_syslog_logging = off\nlogging_remote_syslog_logging = off\n\
             disable_usage_report = on\nenable_ban = on\nenable_ban_ipv6 = on\n\
             process_incoming_traffic = on\nprocess_outgoing_traffic = on\n\
             ban_details_records_count = 5\nban_time = {ban_time}\nunban_only_if_attack_finished = on\n\
             networks_list_path = {d}/networks_list\nwhite_list_path = {d}/networks_whitelist\n\
             check_period = 1\nenable_connection_tracking = off\n\
             ban_for_pps = on\nban_for_bandwidth = off\nban_for_flows = off\n\
             threshold_pps = {pps}\nthreshold_mbps = 100000\nthreshold_flows = 100000\n\
             mirror_afpacket = off\nmirror_afxdp = off\nmirror_netmap = off\npcap = off\n\
             netflow = on\nsflow = off\ninterfaces = lo\naverage_calculation_time = 5\n\
             speed_calculation_delay = 1\nnetflow_port = {port}\nnetflow_host = 127.0.0.1\n\
             netflow_sampling_ratio = 1\nnotify_script_path = {script}\n\
             collect_attack_pcap_dumps = off\nredis_enabled = off\nmongodb_enabled = off\n\
             exabgp = off\ngobgp = off\n{influx}graphite = off\nmonitor_local_ip_addresses = off\n\
             monitor_openvz_vps_ip_addresses = off\npid_path = {d}/fastnetmon.pid\n\
             cli_stats_file_path = {d}/fastnetmon.dat\ncli_stats_ipv6_file_path = {d}/fastnetmon_ipv6.dat\n\
             enable_api = {api}\nkafka_traffic_export = off\nprometheus = off\n",
            ban_time = opts.ban_time,
            d = d.display(),
            pps = opts.threshold_pps,
            script = opts.notify_script.display(),
            api = if opts.grpc_api { "on" } else { "off" },
        );
        let conf_path = d.join("fastnetmon.conf");
        std::fs::write(&conf_path, conf).expect("write conf");
        let log = d.join("fastnetmon.log");
        let child = Command::new(binary())
            .arg("--configuration_file")
            .arg(&conf_path)
            .arg("--log_file")
            .arg(&log)
            .arg("--disable_pid_logic")
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fastnetmon");
        let fnm = Fastnetmon {
            child,
            netflow: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
            log,
        };
        // Ready when the collector has bound its port.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if UdpSocket::bind(fnm.netflow).is_err() {
                return fnm;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "fastnetmon did not bind its NetFlow port; log:\n{}",
            fnm.log_tail()
        );
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Sends NetFlow v5 describing a UDP flood to `victim` at about `pps` packets per second,
    /// until the returned guard is dropped (at most `max` long). Only the NetFlow datagrams are
    /// sent, to FastNetMon's collector on loopback: no traffic goes to `victim`.
    pub fn flood(&self, victim: Ipv4Addr, pps: u32, max: Duration) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let target = self.netflow;
        let thread = std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
            let started = Instant::now();
            let mut seq: u32 = 0;
            while !s.load(Ordering::SeqCst) && started.elapsed() < max {
                let uptime = started.elapsed().as_millis() as u32 + 100_000;
                // Two flows per 0.5 s export, each carrying half of the period's packets.
                let pkts = pps / 2 / 2;
                let mut buf = Vec::with_capacity(24 + 2 * 48);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as u32)
                    .unwrap_or(0);
                buf.extend_from_slice(&5u16.to_be_bytes());
                buf.extend_from_slice(&2u16.to_be_bytes());
                buf.extend_from_slice(&uptime.to_be_bytes());
                buf.extend_from_slice(&now.to_be_bytes());
                buf.extend_from_slice(&0u32.to_be_bytes());
                buf.extend_from_slice(&seq.to_be_bytes());
                buf.extend_from_slice(&[0, 0, 0, 0]);
                for i in 0..2u8 {
                    buf.extend_from_slice(&[192, 0, 2, i + 1]); // source (documentation range)
                    buf.extend_from_slice(&victim.octets());
                    buf.extend_from_slice(&[0, 0, 0, 0]);
                    buf.extend_from_slice(&1u16.to_be_bytes());
                    buf.extend_from_slice(&2u16.to_be_bytes());
                    buf.extend_from_slice(&pkts.to_be_bytes());
                    buf.extend_from_slice(&(pkts * 1000).to_be_bytes());
                    buf.extend_from_slice(&(uptime - 500).to_be_bytes());
                    buf.extend_from_slice(&uptime.to_be_bytes());
                    buf.extend_from_slice(&12345u16.to_be_bytes());
                    buf.extend_from_slice(&53u16.to_be_bytes());
                    buf.extend_from_slice(&[0, 0, 17, 0]);
                    buf.extend_from_slice(&[0, 0, 0, 0, 24, 24, 0, 0]);
                }
                seq = seq.wrapping_add(2);
                let _ = sock.send_to(&buf, target);
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Flood {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Fastnetmon {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A NetFlow sender; stops when dropped.
pub struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
