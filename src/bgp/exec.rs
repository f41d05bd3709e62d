//! `exec` backend: for operators whose speaker we do not drive ourselves (FRR's vtysh, birdc, the
//! gobgp CLI). Announce and withdraw run an argv template, never through a shell, with the
//! route's prefix, next hop and communities substituted. It cannot read the speaker's RIB back,
//! so it cannot reconcile: `list` answers "unknown" and the ledger is the only truth.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{BgpError, PeerState, RibPath, Route, Speaker, SpeakerHealth, Withdrawn};

/// The placeholders a template may use, each written `{name}`; `{{` and `}}` are literal braces.
pub const PLACEHOLDERS: &[&str] = &[
    "prefix",
    "prefix_address",
    "prefix_length",
    "next_hop",
    "communities",
    "large_communities",
    "afi",
    "family",
];

/// Lines of stderr kept in an error message.
const STDERR_LINES: usize = 3;
const STDERR_CHARS: usize = 400;

/// `[bgp.exec]`: the commands, as argv arrays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecTemplates {
    pub announce: Vec<String>,
    pub withdraw: Vec<String>,
}

/// One piece of an argument: literal text or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Prefix,
    PrefixAddress,
    PrefixLength,
    NextHop,
    Communities,
    LargeCommunities,
    Afi,
    Family,
}

impl Field {
    fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "prefix" => Field::Prefix,
            "prefix_address" => Field::PrefixAddress,
            "prefix_length" => Field::PrefixLength,
            "next_hop" => Field::NextHop,
            "communities" => Field::Communities,
            "large_communities" => Field::LargeCommunities,
            "afi" => Field::Afi,
            "family" => Field::Family,
            _ => return None,
        })
    }

    fn value(self, route: &Route) -> String {
        let prefix = route.prefix.trunc();
        let joined = |items: Vec<String>| items.join(",");
        match self {
            Field::Prefix => prefix.to_string(),
            Field::PrefixAddress => prefix.addr().to_string(),
            Field::PrefixLength => prefix.prefix_len().to_string(),
            Field::NextHop => route.next_hop.to_string(),
            Field::Communities => joined(route.communities.iter().map(|c| c.to_string()).collect()),
            Field::LargeCommunities => joined(
                route
                    .large_communities
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
            ),
            Field::Afi => match prefix {
                IpNet::V4(_) => "ipv4".into(),
                IpNet::V6(_) => "ipv6".into(),
            },
            Field::Family => match prefix {
                IpNet::V4(_) => "4".into(),
                IpNet::V6(_) => "6".into(),
            },
        }
    }
}

/// What is wrong with a template: the argument's index and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Index into the argv array, `None` for the array as a whole.
    pub index: Option<usize>,
    pub reason: String,
}

/// A parsed argv template: the program, fixed, and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    program: String,
    args: Vec<Vec<Piece>>,
}

impl Template {
    /// Parses `argv`; every problem is reported with the argument it is in.
    pub fn parse(argv: &[String]) -> Result<Template, Vec<TemplateError>> {
        let mut errors = Vec::new();
        let Some((program, args)) = argv.split_first() else {
            return Err(vec![TemplateError {
                index: None,
                reason:
                    "empty: expected a program and its arguments, like [\"gobgp\", \"global\", \
                         \"rib\", \"add\", \"{prefix}\", ...]"
                        .into(),
            }]);
        };
        if program.trim().is_empty() {
            errors.push(TemplateError {
                index: Some(0),
                reason: "the program is empty".into(),
            });
        } else if program.contains('{') || program.contains('}') {
            errors.push(TemplateError {
                index: Some(0),
                reason: format!("`{program}`: the program must be fixed, not a placeholder"),
            });
        }
        let mut parsed = Vec::with_capacity(args.len());
        for (i, arg) in args.iter().enumerate() {
            match parse_arg(arg) {
                Ok(pieces) => parsed.push(pieces),
                Err(reason) => errors.push(TemplateError {
                    index: Some(i + 1),
                    reason,
                }),
            }
        }
        if errors.is_empty() {
            Ok(Template {
                program: program.clone(),
                args: parsed,
            })
        } else {
            Err(errors)
        }
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    /// The argv for `route`: each argument stays one argument, whatever its value holds.
    pub fn render(&self, route: &Route) -> Vec<String> {
        let mut argv = Vec::with_capacity(self.args.len() + 1);
        argv.push(self.program.clone());
        for pieces in &self.args {
            let mut arg = String::new();
            for piece in pieces {
                match piece {
                    Piece::Text(t) => arg.push_str(t),
                    Piece::Field(f) => arg.push_str(&f.value(route)),
                }
            }
            argv.push(arg);
        }
        argv
    }
}

fn parse_arg(arg: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("`{arg}`: `{{` without its `}}`")),
                    }
                }
                let field = Field::parse(name.trim()).ok_or_else(|| {
                    format!(
                        "`{arg}`: unknown placeholder `{{{name}}}` (known: {})",
                        PLACEHOLDERS
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Field(field));
            }
            '}' => return Err(format!("`{arg}`: `}}` without its `{{` (write `}}}}`)")),
            c => text.push(c),
        }
    }
    if !text.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// What is wrong with `[bgp.exec]`, as (key, reason) pairs: `bgp.exec.announce[3]` and the like.
/// A template left empty is only wrong when the `exec` backend is in use; one that is set is
/// checked either way, so a typo shows before the day it is switched on.
pub fn config_issues(templates: &ExecTemplates, in_use: bool) -> Vec<(String, String)> {
    let mut issues = Vec::new();
    for (key, argv) in [
        ("announce", &templates.announce),
        ("withdraw", &templates.withdraw),
    ] {
        if argv.is_empty() && !in_use {
            continue;
        }
        if let Err(errors) = Template::parse(argv) {
            for e in errors {
                let key = match e.index {
                    Some(i) => format!("bgp.exec.{key}[{i}]"),
                    None => format!("bgp.exec.{key}"),
                };
                issues.push((key, e.reason));
            }
        }
    }
    issues
}

/// A [`Speaker`] that runs a command per announce and withdraw.
#[derive(Debug, Clone)]
pub struct ExecSpeaker {
    announce: Template,
    withdraw: Template,
    timeout: Duration,
}

impl ExecSpeaker {
    /// `timeout` bounds each command; a command still running then is killed.
    pub fn new(templates: &ExecTemplates, timeout: Duration) -> Result<Self, BgpError> {
        let issues = config_issues(templates, true);
        match (
            Template::parse(&templates.announce),
            Template::parse(&templates.withdraw),
        ) {
            (Ok(announce), Ok(withdraw)) => Ok(ExecSpeaker {
                announce,
                withdraw,
                timeout,
            }),
            _ => Err(BgpError::Rejected(
                issues
                    .iter()
                    .map(|(key, reason)| format!("{key}: {reason}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }

    async fn run(&self, template: &Template, route: &Route) -> Result<(), BgpError> {
        let argv = template.render(route);
        let shown = shell_words(&argv);
        tracing::debug!(command = %shown, "exec backend: running");
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A command that outlives the timeout is killed when its future is dropped.
            .kill_on_drop(true);
        // Our own settings (API tokens may be among them) are none of the command's business.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("FNM_ESCALATOR") {
                command.env_remove(name);
            }
        }
        let child = command
            .spawn()
            .map_err(|e| BgpError::Rejected(format!("cannot run `{}`: {e}", template.program())))?;
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(BgpError::Rejected(format!(
                    "`{shown}`: waiting for it failed: {e}"
                )))
            }
            Err(_) => {
                return Err(BgpError::Unreachable(format!(
                    "`{shown}` did not finish within {:?}; killed",
                    self.timeout
                )))
            }
        };
        if output.status.success() {
            return Ok(());
        }
        let how = match output.status.code() {
            Some(code) => format!("exited with code {code}"),
            None => {
                use std::os::unix::process::ExitStatusExt;
                match output.status.signal() {
                    Some(sig) => format!("was killed by signal {sig}"),
                    None => format!("failed ({})", output.status),
                }
            }
        };
        // Most tools explain on stderr; some (vtysh) on stdout.
        let mut said = first_lines(&String::from_utf8_lossy(&output.stderr));
        if said.is_empty() {
            said = first_lines(&String::from_utf8_lossy(&output.stdout));
        }
        Err(BgpError::Rejected(if said.is_empty() {
            format!("`{shown}` {how}")
        } else {
            format!("`{shown}` {how}: {said}")
        }))
    }
}

/// The first lines of a command's stderr, trimmed, for an error message.
fn first_lines(stderr: &str) -> String {
    let mut out = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(STDERR_LINES)
        .collect::<Vec<_>>()
        .join(" | ");
    if out.chars().count() > STDERR_CHARS {
        out = out.chars().take(STDERR_CHARS).collect::<String>() + "...";
    }
    out
}

/// The argv as a reader would type it (for logs and errors only; nothing is run by a shell).
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:,=@+%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where `program` would be run from: itself if it names a path, else the first match on PATH.
fn resolve(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

#[async_trait]
impl Speaker for ExecSpeaker {
    fn name(&self) -> &'static str {
        "exec"
    }

    async fn announce(&self, route: &Route) -> Result<(), BgpError> {
        check_family(route)?;
        self.run(&self.announce, route).await
    }

    async fn withdraw(&self, route: &Route) -> Result<Withdrawn, BgpError> {
        check_family(route)?;
        self.run(&self.withdraw, route).await?;
        Ok(Withdrawn::Removed)
    }

    /// The commands cannot tell what the speaker holds.
    async fn list(&self) -> Result<Option<Vec<RibPath>>, BgpError> {
        Ok(None)
    }

    /// Reachable when both programs exist and are executable; whether they will succeed is
    /// only known by running them.
    async fn health(&self) -> SpeakerHealth {
        let missing: Vec<&str> = [&self.announce, &self.withdraw]
            .iter()
            .map(|t| t.program())
            .filter(|p| resolve(p).is_none())
            .collect();
        SpeakerHealth {
            backend: "exec",
            reachable: missing.is_empty(),
            peers: Vec::<PeerState>::new(),
            detail: Some(if missing.is_empty() {
                "commands are run per change; the speaker's RIB cannot be read back".to_string()
            } else {
                format!("not found or not executable: {}", missing.join(", "))
            }),
        }
    }
}

fn check_family(route: &Route) -> Result<(), BgpError> {
    match (route.prefix, route.next_hop) {
        (IpNet::V4(_), IpAddr::V4(_)) | (IpNet::V6(_), IpAddr::V6(_)) => Ok(()),
        (prefix, nh) => Err(BgpError::Rejected(format!(
            "{prefix}: next hop {nh} is not of the prefix's address family"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, nh: &str) -> Route {
        Route {
            prefix: prefix.parse().unwrap(),
            next_hop: nh.parse().unwrap(),
            communities: vec!["65001:777".parse().unwrap(), "65001:778".parse().unwrap()],
            large_communities: vec!["65001:1:777".parse().unwrap()],
        }
    }

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn speaker(announce: &[&str], timeout: Duration) -> ExecSpeaker {
        ExecSpeaker::new(
            &ExecTemplates {
                announce: argv(announce),
                withdraw: argv(&["true"]),
            },
            timeout,
        )
        .unwrap()
    }

    #[test]
    fn substitutes_every_placeholder_whole_and_inside_arguments() {
        let t = Template::parse(&argv(&[
            "gobgp",
            "global",
            "rib",
            "add",
            "-a",
            "{afi}",
            "{prefix}",
            "community",
            "{communities}",
            "large-community",
            "{large_communities}",
            "nexthop",
            "{next_hop}",
            "network {prefix_address}/{prefix_length} ipv{family}",
            "{{literal}}",
        ]))
        .unwrap();
        assert_eq!(
            t.render(&route("198.51.100.7/24", "192.0.2.1")),
            argv(&[
                "gobgp",
                "global",
                "rib",
                "add",
                "-a",
                "ipv4",
                "198.51.100.0/24",
                "community",
                "65001:777,65001:778",
                "large-community",
                "65001:1:777",
                "nexthop",
                "192.0.2.1",
                "network 198.51.100.0/24 ipv4",
                "{literal}",
            ])
        );
        let v6 = t.render(&route("2001:db8:1::/48", "100::1"));
        assert_eq!(&v6[5..7], ["ipv6", "2001:db8:1::/48"]);
        assert_eq!(v6[13], "network 2001:db8:1::/48 ipv6");
    }

    #[test]
    fn empty_lists_render_as_empty_arguments() {
        let t = Template::parse(&argv(&["x", "{communities}", "c={large_communities}"])).unwrap();
        let mut r = route("198.51.100.0/24", "192.0.2.1");
        r.communities.clear();
        r.large_communities.clear();
        assert_eq!(t.render(&r), argv(&["x", "", "c="]));
    }

    #[test]
    fn unknown_placeholder_is_rejected_naming_the_argument() {
        let errors = Template::parse(&argv(&["gobgp", "{prefix}", "{nexthop}"])).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].index, Some(2));
        assert!(
            errors[0].reason.contains("{nexthop}"),
            "{}",
            errors[0].reason
        );
        assert!(errors[0].reason.contains("{next_hop}"));
    }

    #[test]
    fn malformed_templates_are_rejected() {
        assert_eq!(Template::parse(&[]).unwrap_err()[0].index, None);
        assert_eq!(Template::parse(&argv(&[""])).unwrap_err()[0].index, Some(0));
        assert_eq!(
            Template::parse(&argv(&["{prefix}"])).unwrap_err()[0].index,
            Some(0)
        );
        assert_eq!(
            Template::parse(&argv(&["x", "{prefix"])).unwrap_err()[0].index,
            Some(1)
        );
        assert_eq!(
            Template::parse(&argv(&["x", "a}b"])).unwrap_err()[0].index,
            Some(1)
        );
        let err = ExecSpeaker::new(
            &ExecTemplates {
                announce: argv(&["x"]),
                withdraw: argv(&["x", "{bogus}"]),
            },
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bgp.exec.withdraw[1]"), "{err}");
    }

    #[test]
    fn values_never_split_into_more_arguments() {
        // No shell: a value with spaces stays one argument, and shell syntax is just text.
        let t = Template::parse(&argv(&["echo", "$(reboot) {prefix}; rm -rf /"])).unwrap();
        let out = t.render(&route("198.51.100.0/24", "192.0.2.1"));
        assert_eq!(out, argv(&["echo", "$(reboot) 198.51.100.0/24; rm -rf /"]));
    }

    #[tokio::test]
    async fn a_successful_command_announces() {
        let s = speaker(&["true", "{prefix}"], Duration::from_secs(5));
        s.announce(&route("198.51.100.0/24", "192.0.2.1"))
            .await
            .unwrap();
        assert_eq!(
            s.withdraw(&route("198.51.100.0/24", "192.0.2.1"))
                .await
                .unwrap(),
            Withdrawn::Removed
        );
        assert_eq!(s.list().await.unwrap(), None);
        assert!(s.health().await.reachable);
    }

    #[tokio::test]
    async fn a_failing_command_reports_its_exit_code_and_stderr() {
        let s = speaker(
            &[
                "sh",
                "-c",
                "echo \"no route to $1\" >&2; exit 3",
                "sh",
                "{prefix}",
            ],
            Duration::from_secs(5),
        );
        let err = s
            .announce(&route("198.51.100.0/24", "192.0.2.1"))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, BgpError::Rejected(_)), "{msg}");
        assert!(msg.contains("exited with code 3"), "{msg}");
        assert!(msg.contains("no route to 198.51.100.0/24"), "{msg}");
    }

    #[tokio::test]
    async fn stdout_explains_when_stderr_is_silent_and_our_environment_is_not_passed_on() {
        let s = speaker(
            &[
                "sh",
                "-c",
                "echo \"% Unknown command: $FNM_ESCALATOR_TEST_EXEC_SECRET\"; exit 1",
            ],
            Duration::from_secs(5),
        );
        // Not under FNM_ESCALATOR__, so no config loader in a parallel test sees it.
        std::env::set_var("FNM_ESCALATOR_TEST_EXEC_SECRET", "secret-token");
        let err = s
            .announce(&route("198.51.100.0/24", "192.0.2.1"))
            .await
            .unwrap_err()
            .to_string();
        std::env::remove_var("FNM_ESCALATOR_TEST_EXEC_SECRET");
        assert!(
            err.contains("exited with code 1: % Unknown command:"),
            "{err}"
        );
        assert!(!err.contains("secret-token"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_program_is_reported() {
        let s = speaker(&["/nonexistent/gobgp", "{prefix}"], Duration::from_secs(5));
        let err = s
            .announce(&route("198.51.100.0/24", "192.0.2.1"))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("cannot run `/nonexistent/gobgp`"),
            "{err}"
        );
        let h = s.health().await;
        assert!(!h.reachable);
        assert!(h.detail.unwrap_or_default().contains("/nonexistent/gobgp"));
    }

    #[tokio::test]
    async fn a_command_over_the_timeout_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 30", pidfile.display());
        let s = speaker(&["sh", "-c", &script], Duration::from_millis(300));
        let started = std::time::Instant::now();
        let err = s
            .announce(&route("198.51.100.0/24", "192.0.2.1"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, BgpError::Unreachable(m) if m.contains("killed")),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        // Killed at once; reaped by tokio shortly after (a zombie meanwhile).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(&stat)
                .ok()
                .and_then(|s| s.rsplit(')').next().map(|r| r.trim().chars().next()))
                .flatten();
            if matches!(state, None | Some('Z')) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sleep still runs: {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn config_names_the_key_of_a_bad_template() {
        use crate::config::{Backend, Config};
        let mut c = Config::default();
        c.bgp.backend = Backend::Exec;
        let keys = |c: &Config| match c.validate() {
            Err(crate::config::ConfigError::Invalid(issues)) => {
                issues.into_iter().map(|i| i.key).collect::<Vec<_>>()
            }
            Ok(()) => Vec::new(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(keys(&c), ["bgp.exec.announce", "bgp.exec.withdraw"]);
        c.bgp.exec.announce = argv(&["gobgp", "global", "rib", "add", "{prefx}"]);
        c.bgp.exec.withdraw = argv(&["gobgp", "global", "rib", "del", "{prefix}"]);
        assert_eq!(keys(&c), ["bgp.exec.announce[4]"]);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("{prefx}"), "{err}");
        c.bgp.exec.announce[4] = "{prefix}".into();
        assert_eq!(keys(&c), Vec::<String>::new());
        // Set but not in use: still checked.
        c.bgp.backend = Backend::None;
        c.bgp.exec.withdraw.push("{oops}".into());
        assert_eq!(keys(&c), ["bgp.exec.withdraw[5]"]);
    }

    #[test]
    fn exec_templates_load_from_toml_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            r#"[bgp]
backend = "exec"
[bgp.exec]
announce = ["gobgp", "global", "rib", "add", "-a", "{afi}", "{prefix}", "nexthop", "{next_hop}"]
withdraw = ["gobgp", "global", "rib", "del", "-a", "{afi}", "{prefix}"]
"#,
        )
        .unwrap();
        let c = crate::config::Config::load_with_env(
            Some(&path),
            [(
                "FNM_ESCALATOR__BGP__EXEC__WITHDRAW".to_string(),
                r#"["birdc", "-s", "/run/bird.ctl", "disable {prefix}"]"#.to_string(),
            )],
        )
        .unwrap();
        assert_eq!(c.bgp.exec.announce[5], "{afi}");
        assert_eq!(c.bgp.exec.withdraw[3], "disable {prefix}");
        // And the effective config prints back as valid TOML.
        let printed = c.redacted_toml();
        assert!(printed.contains("[bgp.exec]"), "{printed}");
        assert!(printed.parse::<toml::Table>().is_ok(), "{printed}");
    }

    #[test]
    fn errors_show_the_command_readably() {
        assert_eq!(
            shell_words(&argv(&["gobgp", "-a", "ipv4", "a b", ""])),
            "gobgp -a ipv4 'a b' ''"
        );
        assert_eq!(first_lines("\n a \n\nb\nc\nd\n"), "a | b | c");
    }
}
