//! etcd 3.5's server flags, for `strata start` (and the binary invoked as `etcd`): an etcd
//! start script or container environment either works unchanged or stops at once with a
//! message naming what Strata cannot honour. Never silently ignored.
//!
//! Each flag is read from `--flag` (or etcd's `-flag`) or from its variable `ETCD_FLAG`, the
//! command line first, as etcd does. The flags Strata implements are `StartArgs`' own: [`take`]
//! turns their variables into arguments for the parser. Every other etcd flag is in [`FLAGS`]
//! with what Strata does about it: accepted with a stated equivalent (logged at start),
//! accepted only with values that mean what Strata does anyway, or refused with the reason;
//! [`take`] removes those from the command line and checks them there and in the environment.

use std::collections::BTreeSet;

/// What Strata does with an etcd flag it does not take as its own.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// Accepted with any value; what Strata does instead.
    Accepted(&'static str),
    /// Accepted with one of these values (etcd's default among them), which mean what Strata
    /// does anyway; any other value is refused, with the reason.
    Only(&'static [&'static str], &'static str),
}

/// An etcd flag: its name, whether it is a boolean (`--flag` alone means `true`, and a value
/// must be attached with `=`), and Strata's rule for it.
pub struct Flag {
    pub name: &'static str,
    pub boolean: bool,
    pub rule: Rule,
}

const fn flag(name: &'static str, rule: Rule) -> Flag {
    Flag { name, boolean: false, rule }
}

const fn switch(name: &'static str, rule: Rule) -> Flag {
    Flag { name, boolean: true, rule }
}

const FALSE: &[&str] = &["false"];
const TRUE: &[&str] = &["true"];
const EMPTY: &[&str] = &[""];
const NO_BBOLT: &str = "Strata's storage engine is not bbolt; the setting has no counterpart";
const NO_V2: &str = "Strata serves etcd's v3 API only; there is no v2 store or proxy";
const NO_TLS: &str = "TLS is not supported yet, and serving plaintext where TLS was asked for \
                      would be worse than not starting";
const NO_DISCOVERY: &str = "discovery is not supported yet; list the members with \
                            --initial-cluster";
const NO_FILES: &str = "Strata keeps no snapshot or WAL files to retain: its Raft log is \
                        compacted in place after --snapshot-count entries";
const NO_TRACING: &str = "distributed tracing is not supported yet";
const NO_CORRUPT_CHECK: &str = "corruption checks across members are not supported yet \
                                (compare `etcdctl endpoint hashkv` answers instead)";

/// Every etcd 3.5 server flag that `StartArgs` does not implement.
pub const FLAGS: &[Flag] = &[
    // Member.
    switch(
        "initial-election-tick-advance",
        Rule::Accepted("a starting member waits out its own randomized election timeout"),
    ),
    flag(
        "listen-client-http-urls",
        Rule::Only(
            EMPTY,
            "a separate HTTP-only port is not supported yet; the client port serves gRPC and HTTP together",
        ),
    ),
    flag("max-snapshots", Rule::Accepted(NO_FILES)),
    flag("max-wals", Rule::Accepted(NO_FILES)),
    flag("backend-bbolt-freelist-type", Rule::Accepted(NO_BBOLT)),
    flag("backend-batch-interval", Rule::Accepted(NO_BBOLT)),
    flag("backend-batch-limit", Rule::Accepted(NO_BBOLT)),
    flag(
        "max-concurrent-streams",
        Rule::Only(&["4294967295"], "a limit on streams per connection is not supported yet"),
    ),
    switch(
        "enable-grpc-gateway",
        Rule::Only(TRUE, "the JSON gateway is always served on the client port"),
    ),
    flag(
        "grpc-keepalive-min-time",
        Rule::Only(&["5s"], "client keep-alive settings are not supported yet"),
    ),
    flag(
        "grpc-keepalive-interval",
        Rule::Only(&["2h"], "client keep-alive settings are not supported yet"),
    ),
    flag(
        "grpc-keepalive-timeout",
        Rule::Only(&["20s"], "client keep-alive settings are not supported yet"),
    ),
    switch("socket-reuse-port", Rule::Only(FALSE, "SO_REUSEPORT is not supported")),
    switch("socket-reuse-address", Rule::Only(FALSE, "SO_REUSEADDR is not supported")),
    flag(
        "raft-read-timeout",
        Rule::Accepted(
            "peer streams detect a silent peer with HTTP/2 keep-alives (every 1 s, 3 s timeout)",
        ),
    ),
    flag(
        "raft-write-timeout",
        Rule::Accepted(
            "peer streams detect a silent peer with HTTP/2 keep-alives (every 1 s, 3 s timeout)",
        ),
    ),
    // Clustering.
    flag("discovery", Rule::Only(EMPTY, NO_DISCOVERY)),
    flag(
        "discovery-fallback",
        Rule::Accepted("without discovery there is nothing to fall back from"),
    ),
    flag("discovery-proxy", Rule::Only(EMPTY, NO_DISCOVERY)),
    flag("discovery-srv", Rule::Only(EMPTY, NO_DISCOVERY)),
    flag("discovery-srv-name", Rule::Only(EMPTY, NO_DISCOVERY)),
    switch(
        "strict-reconfig-check",
        Rule::Only(FALSE, "refusing reconfigurations that would lose quorum is not supported yet"),
    ),
    switch("pre-vote", Rule::Only(TRUE, "Strata always runs Raft's pre-vote phase")),
    switch("enable-v2", Rule::Only(FALSE, NO_V2)),
    flag("v2-deprecation", Rule::Accepted(NO_V2)),
    // Security.
    flag("cert-file", Rule::Only(EMPTY, NO_TLS)),
    flag("key-file", Rule::Only(EMPTY, NO_TLS)),
    switch("client-cert-auth", Rule::Only(FALSE, NO_TLS)),
    flag("client-cert-file", Rule::Only(EMPTY, NO_TLS)),
    flag("client-key-file", Rule::Only(EMPTY, NO_TLS)),
    flag("client-crl-file", Rule::Only(EMPTY, NO_TLS)),
    flag("client-cert-allowed-hostname", Rule::Only(EMPTY, NO_TLS)),
    flag("trusted-ca-file", Rule::Only(EMPTY, NO_TLS)),
    switch("auto-tls", Rule::Only(FALSE, NO_TLS)),
    flag("peer-cert-file", Rule::Only(EMPTY, NO_TLS)),
    flag("peer-key-file", Rule::Only(EMPTY, NO_TLS)),
    switch("peer-client-cert-auth", Rule::Only(FALSE, NO_TLS)),
    flag("peer-trusted-ca-file", Rule::Only(EMPTY, NO_TLS)),
    flag("peer-cert-allowed-cn", Rule::Only(EMPTY, NO_TLS)),
    flag("peer-cert-allowed-hostname", Rule::Only(EMPTY, NO_TLS)),
    switch("peer-auto-tls", Rule::Only(FALSE, NO_TLS)),
    flag("peer-client-cert-file", Rule::Only(EMPTY, NO_TLS)),
    flag("peer-client-key-file", Rule::Only(EMPTY, NO_TLS)),
    flag("self-signed-cert-validity", Rule::Accepted("without TLS no certificate is generated")),
    flag("peer-crl-file", Rule::Only(EMPTY, NO_TLS)),
    flag("cipher-suites", Rule::Only(EMPTY, NO_TLS)),
    flag(
        "cors",
        Rule::Only(&["*", ""], "restricting the JSON gateway to origins is not supported yet"),
    ),
    flag(
        "host-whitelist",
        Rule::Only(&["*", ""], "restricting the Host header is not supported yet"),
    ),
    flag("tls-min-version", Rule::Accepted("without TLS there is no version to choose")),
    flag("tls-max-version", Rule::Accepted("without TLS there is no version to choose")),
    switch("experimental-peer-skip-client-san-verification", Rule::Only(FALSE, NO_TLS)),
    // Auth.
    flag(
        "auth-token",
        Rule::Only(&["simple"], "authentication is not supported yet (auth stays disabled)"),
    ),
    flag(
        "bcrypt-cost",
        Rule::Accepted("authentication is not supported yet (auth stays disabled)"),
    ),
    flag(
        "auth-token-ttl",
        Rule::Accepted("authentication is not supported yet (auth stays disabled)"),
    ),
    // Profiling and monitoring.
    switch(
        "enable-pprof",
        Rule::Only(FALSE, "there is no Go runtime to profile; use `perf` on the process"),
    ),
    flag("metrics", Rule::Accepted("Strata's /metrics always include its histograms")),
    // Logging.
    flag("logger", Rule::Only(&["zap"], "Strata writes structured log lines to stderr")),
    flag("log-outputs", Rule::Only(&["default", "stderr"], "Strata logs to stderr only")),
    switch(
        "enable-log-rotation",
        Rule::Only(FALSE, "Strata logs to stderr; rotate with the service manager"),
    ),
    flag(
        "log-rotation-config-json",
        Rule::Accepted("Strata logs to stderr; rotate with the service manager"),
    ),
    // Distributed tracing.
    switch("experimental-enable-distributed-tracing", Rule::Only(FALSE, NO_TRACING)),
    flag("experimental-distributed-tracing-address", Rule::Accepted(NO_TRACING)),
    flag("experimental-distributed-tracing-service-name", Rule::Accepted(NO_TRACING)),
    flag("experimental-distributed-tracing-instance-id", Rule::Accepted(NO_TRACING)),
    flag("experimental-distributed-tracing-sampling-rate", Rule::Accepted(NO_TRACING)),
    // v2 proxy.
    flag("proxy", Rule::Only(&["off"], NO_V2)),
    flag("proxy-failure-wait", Rule::Accepted(NO_V2)),
    flag("proxy-refresh-interval", Rule::Accepted(NO_V2)),
    flag("proxy-dial-timeout", Rule::Accepted(NO_V2)),
    flag("proxy-write-timeout", Rule::Accepted(NO_V2)),
    flag("proxy-read-timeout", Rule::Accepted(NO_V2)),
    // Experimental.
    switch("experimental-initial-corrupt-check", Rule::Only(FALSE, NO_CORRUPT_CHECK)),
    flag("experimental-corrupt-check-time", Rule::Only(&["0s", "0"], NO_CORRUPT_CHECK)),
    switch("experimental-compact-hash-check-enabled", Rule::Only(FALSE, NO_CORRUPT_CHECK)),
    flag("experimental-compact-hash-check-time", Rule::Accepted(NO_CORRUPT_CHECK)),
    flag("experimental-enable-v2v3", Rule::Only(EMPTY, NO_V2)),
    switch(
        "experimental-enable-lease-checkpoint",
        Rule::Only(
            FALSE,
            "lease checkpoints are not supported yet: a new leader gives every lease its whole TTL again",
        ),
    ),
    switch(
        "experimental-enable-lease-checkpoint-persist",
        Rule::Only(
            FALSE,
            "lease checkpoints are not supported yet: a new leader gives every lease its whole TTL again",
        ),
    ),
    flag(
        "experimental-compaction-sleep-interval",
        Rule::Accepted(
            "compaction runs in steps of --experimental-compaction-batch-limit records, one per heartbeat",
        ),
    ),
    flag(
        "experimental-downgrade-check-time",
        Rule::Accepted("downgrades are not supported, so there is nothing to check"),
    ),
    switch("experimental-memory-mlock", Rule::Only(FALSE, NO_BBOLT)),
    flag(
        "experimental-warning-apply-duration",
        Rule::Accepted("slow applies show in the strata_raftstore_round_seconds histogram"),
    ),
    switch("experimental-txn-mode-write-with-shared-buffer", Rule::Accepted(NO_BBOLT)),
    flag("experimental-bootstrap-defrag-threshold-megabytes", Rule::Accepted(NO_BBOLT)),
    switch(
        "experimental-stop-grpc-service-on-defrag",
        Rule::Only(
            FALSE,
            "defragmenting does not stop serving: the store compacts beside reads and writes",
        ),
    ),
    // Unsafe.
    switch(
        "force-new-cluster",
        Rule::Only(FALSE, "recovering by forcing a new cluster is not supported yet"),
    ),
    switch(
        "unsafe-no-fsync",
        Rule::Only(FALSE, "Strata does not run without fsync: it would lose acknowledged writes"),
    ),
];

/// What [`take`] left for the command-line parser, and what it has to say at start.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// The command line without the flags of [`FLAGS`].
    pub args: Vec<String>,
    /// One line per flag accepted from [`FLAGS`], per variable shadowed by a flag, and per
    /// `ETCD_*` variable no flag has: for the log.
    pub notes: Vec<String>,
}

/// The environment variable etcd reads a flag from.
pub fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.replace('-', "_").to_uppercase())
}

/// Takes the flags of [`FLAGS`] out of `args` (the arguments after `start`) and out of `env`
/// (the process's variables), checking each against its rule. `own` names the flags
/// `strata start` implements itself: their variables become arguments unless the command line
/// gives the flag (then a note says the variable is shadowed). An error names the flag or
/// variable refused and why.
pub fn take(args: &[String], env: &[(String, String)], own: &[&str]) -> Result<Taken, String> {
    let mut taken = Taken::default();
    let mut given = BTreeSet::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let Some(spelled) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            taken.args.push(arg.clone());
            continue;
        };
        let (name, attached) = match spelled.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (spelled, None),
        };
        let Some(flag) = FLAGS.iter().find(|f| f.name == name) else {
            // etcd's flags may be spelled with one dash (`-name`), as Go's flag package takes
            // them; the parser wants two.
            let own = own.contains(&name);
            taken.args.push(if own && !arg.starts_with("--") {
                format!("-{arg}")
            } else {
                arg.clone()
            });
            if own {
                given.insert(name.to_string());
            }
            continue;
        };
        given.insert(name.to_string());
        let value = match (attached, flag.boolean) {
            (Some(value), _) => value,
            (None, true) => "true".to_string(),
            (None, false) => args.next().cloned().ok_or(format!("flag --{name} needs a value"))?,
        };
        taken.notes.extend(check(flag, &value, &format!("--{name}"))?);
    }
    for (variable, value) in env.iter().filter(|(v, _)| v.starts_with("ETCD_")) {
        if let Some(flag) = FLAGS.iter().find(|f| env_name(f.name) == *variable) {
            if given.contains(flag.name) {
                taken.notes.push(format!("{variable} is shadowed by --{}", flag.name));
            } else {
                taken.notes.extend(check(flag, value, variable)?);
            }
        } else if let Some(name) = own.iter().find(|name| env_name(name) == *variable) {
            if given.contains(*name) {
                taken.notes.push(format!("{variable} is shadowed by --{name}"));
            } else {
                taken.args.push(format!("--{name}={value}"));
            }
        } else if variable != "ETCD_UNSUPPORTED_ARCH" {
            taken.notes.push(format!("unrecognized environment variable {variable}={value}"));
        }
    }
    Ok(taken)
}

/// Checks one flag's value (given as `source`: `--flag` or `ETCD_FLAG`) against its rule:
/// a note when accepted with an equivalent, an error naming it when refused.
fn check(flag: &Flag, value: &str, source: &str) -> Result<Option<String>, String> {
    let value = value.trim();
    let equal = |accepted: &str| match flag.boolean {
        true => accepted.eq_ignore_ascii_case(value) || (accepted == "true" && value == "1"),
        false => accepted == value,
    };
    match flag.rule {
        Rule::Accepted(instead) => Ok(Some(format!("{source}={value} accepted: {instead}"))),
        Rule::Only(values, _) if values.iter().any(|v| equal(v)) => Ok(None),
        Rule::Only(_, why) => {
            Err(format!("etcd flag {source}={value} is not supported by Strata: {why}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn accepted_flags_are_taken_out_and_noted() {
        let args = strings(&["--name", "a", "--max-wals=5", "--enable-v2=false", "--pre-vote"]);
        let taken = take(&args, &[], &["name"]).unwrap();
        assert_eq!(taken.args, strings(&["--name", "a"]));
        assert_eq!(taken.notes.len(), 1, "{:?}", taken.notes);
        assert!(taken.notes[0].starts_with("--max-wals=5 accepted: "), "{:?}", taken.notes);
        // A value after a non-boolean flag is its value, not an argument; one dash will do.
        let taken = take(&strings(&["-max-wals", "5", "-name", "a"]), &[], &["name"]).unwrap();
        assert_eq!(taken.args, strings(&["--name", "a"]));
        let taken = take(&strings(&["--quota-backend-bytes", "-1"]), &[], &[]).unwrap();
        assert_eq!(taken.args, strings(&["--quota-backend-bytes", "-1"]));
    }

    #[test]
    fn refused_flags_name_themselves_and_why() {
        let error = take(&strings(&["--cert-file", "/etc/ssl/a.pem"]), &[], &[]).unwrap_err();
        assert_eq!(
            error,
            format!("etcd flag --cert-file=/etc/ssl/a.pem is not supported by Strata: {NO_TLS}")
        );
        let error = take(&strings(&["--enable-v2"]), &[], &[]).unwrap_err();
        assert!(error.starts_with("etcd flag --enable-v2=true is not supported"), "{error}");
        let env = [("ETCD_CLIENT_CERT_AUTH".to_string(), "true".to_string())];
        let error = take(&[], &env, &[]).unwrap_err();
        assert!(error.starts_with("etcd flag ETCD_CLIENT_CERT_AUTH=true is not"), "{error}");
        let error = take(&strings(&["--discovery"]), &[], &[]).unwrap_err();
        assert_eq!(error, "flag --discovery needs a value");
    }

    #[test]
    fn the_command_line_shadows_the_environment_and_strays_are_named() {
        let env = [
            ("ETCD_NAME".to_string(), "b".to_string()),
            ("ETCD_MAX_WALS".to_string(), "5".to_string()),
            ("ETCD_NO_SUCH_FLAG".to_string(), "1".to_string()),
            ("ETCD_UNSUPPORTED_ARCH".to_string(), "arm".to_string()),
            ("ETCDCTL_API".to_string(), "3".to_string()),
        ];
        let taken = take(&strings(&["--name", "a", "--max-wals=3"]), &env, &["name"]).unwrap();
        assert_eq!(taken.args, strings(&["--name", "a"]));
        let taken_from_env = take(&[], &env[..1], &["name"]).unwrap();
        assert_eq!(taken_from_env.args, strings(&["--name=b"]));
        let mut notes = taken.notes.clone();
        notes.sort();
        assert_eq!(notes.len(), 4, "{notes:?}");
        assert!(notes[0].starts_with("--max-wals=3 accepted"));
        assert_eq!(notes[1], "ETCD_MAX_WALS is shadowed by --max-wals");
        assert_eq!(notes[2], "ETCD_NAME is shadowed by --name");
        assert_eq!(notes[3], "unrecognized environment variable ETCD_NO_SUCH_FLAG=1");
    }
}
