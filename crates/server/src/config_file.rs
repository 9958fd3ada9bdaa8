//! etcd's `--config-file`: a YAML map from flag names to values, as etcd reads it — one key per
//! flag, the transport security settings nested under `client-transport-security` and
//! `peer-transport-security`, lists (`log-outputs: [stderr]`) for the flags that take several
//! values. The file becomes the command line `strata start` would have been given, and goes
//! through the same checks (`etcd_flags`).
//!
//! The part of YAML such files use is read here: `key: value` lines, one level of nesting under
//! the two security keys, plain, single- and double-quoted scalars, `null` and `~`, block and
//! flow lists of scalars, comments. Anything else is refused with its line number rather than
//! guessed at.

/// The `--flag=value` arguments a configuration file stands for.
pub fn args_from(text: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    // The mapping key whose nested map or block list the following indented lines belong to.
    let mut open: Option<String> = None;
    let mut list: Option<(String, Vec<String>)> = None;
    for (number, raw) in text.lines().enumerate().map(|(i, l)| (i + 1, l)) {
        let line = strip_comment(raw);
        if line.trim().is_empty() || line.trim() == "---" {
            continue;
        }
        let fail = |what: &str| format!("line {number}: {what}: {raw:?}");
        let indented = line.starts_with([' ', '\t']);
        let content = line.trim();
        if let Some(item) = content.strip_prefix("- ").or((content == "-").then_some("")) {
            let Some((_, items)) = list.as_mut() else {
                return Err(fail("a list item with no key"));
            };
            items.push(scalar(item).map_err(|e| fail(&e))?.unwrap_or_default());
            continue;
        }
        if let Some((name, items)) = list.take()
            && !items.is_empty()
        {
            args.push(format!("--{name}={}", items.join(",")));
        }
        let (key, value) = content.split_once(':').ok_or_else(|| fail("expected `key: value`"))?;
        let (key, value) = (key.trim(), value.trim());
        let name = match (indented, &open) {
            (false, _) => {
                open = None;
                key.to_string()
            }
            (true, Some(parent)) => nested_flag(parent, key).map_err(|e| fail(&e))?,
            (true, None) => return Err(fail("an indented key outside a nested map")),
        };
        if value.is_empty() {
            // A nested map, a block list, or an empty value (etcd's default).
            if !indented && (key == "client-transport-security" || key == "peer-transport-security")
            {
                open = Some(key.to_string());
            } else {
                list = Some((name, Vec::new()));
            }
            continue;
        }
        if let Some(flow) = value.strip_prefix('[') {
            let items = flow.strip_suffix(']').ok_or_else(|| fail("an unclosed list"))?;
            let items: Result<Vec<String>, String> = (items.split(','))
                .filter(|item| !item.trim().is_empty())
                .map(|item| scalar(item).map(Option::unwrap_or_default))
                .collect();
            args.push(format!("--{name}={}", items.map_err(|e| fail(&e))?.join(",")));
            continue;
        }
        if value.starts_with(['{', '&', '*', '!', '|', '>']) {
            return Err(fail("YAML beyond plain keys, scalars and lists is not supported"));
        }
        if let Some(value) = scalar(value).map_err(|e| fail(&e))? {
            args.push(format!("--{name}={value}"));
        }
    }
    if let Some((name, items)) = list.take()
        && !items.is_empty()
    {
        args.push(format!("--{name}={}", items.join(",")));
    }
    Ok(args)
}

/// The flag a key nested under a security key stands for, as etcd's file names them.
fn nested_flag(parent: &str, key: &str) -> Result<String, String> {
    let known =
        ["cert-file", "key-file", "client-cert-auth", "trusted-ca-file", "auto-tls", "crl-file"];
    let client = parent == "client-transport-security";
    match key {
        "allowed-cn" if !client => Ok("peer-cert-allowed-cn".into()),
        "allowed-hostname" if client => Ok("client-cert-allowed-hostname".into()),
        "allowed-hostname" => Ok("peer-cert-allowed-hostname".into()),
        "crl-file" if client => Ok("client-crl-file".into()),
        key if known.contains(&key) && client => Ok(key.into()),
        key if known.contains(&key) => Ok(format!("peer-{key}")),
        other => Err(format!("{other:?} is not a setting of {parent}")),
    }
}

/// A scalar's text; `None` for YAML's null.
fn scalar(text: &str) -> Result<Option<String>, String> {
    let text = text.trim();
    if let Some(quoted) = text.strip_prefix('\'') {
        let inner = quoted.strip_suffix('\'').ok_or("an unclosed quote")?;
        return Ok(Some(inner.replace("''", "'")));
    }
    if let Some(quoted) = text.strip_prefix('"') {
        let inner = quoted.strip_suffix('"').ok_or("an unclosed quote")?;
        let mut value = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            value.push(match (c, c == '\\') {
                (_, true) => match chars.next() {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some(escaped @ ('"' | '\\' | '/')) => escaped,
                    other => return Err(format!("an unknown escape \\{}", other.unwrap_or(' '))),
                },
                (c, false) => c,
            });
        }
        return Ok(Some(value));
    }
    Ok(match text {
        "" | "~" | "null" | "Null" | "NULL" => None,
        plain => Some(plain.to_string()),
    })
}

/// The line without a comment (a `#` at its start or after a space, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if previous == ' ' || previous == '\t' => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etcd_configuration_file_becomes_its_flags() {
        let file = r#"
# This is the configuration file for the etcd server.
name: 'infra1'
data-dir: /var/lib/etcd   # where the data goes
heartbeat-interval: 100
initial-cluster: "infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380"
initial-cluster-state: 'new'
discovery:
enable-v2: false
log-outputs: [stderr]
listen-client-urls:
  - http://10.0.0.1:2379
  - http://127.0.0.1:2379
client-transport-security:
  cert-file:
  client-cert-auth: false
peer-transport-security:
  trusted-ca-file: ~
  allowed-cn: ''
quota-backend-bytes: 8589934592
"#;
        let args = args_from(file).unwrap();
        assert_eq!(
            args,
            [
                "--name=infra1",
                "--data-dir=/var/lib/etcd",
                "--heartbeat-interval=100",
                "--initial-cluster=infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380",
                "--initial-cluster-state=new",
                "--enable-v2=false",
                "--log-outputs=stderr",
                "--listen-client-urls=http://10.0.0.1:2379,http://127.0.0.1:2379",
                "--client-cert-auth=false",
                "--peer-cert-allowed-cn=",
                "--quota-backend-bytes=8589934592",
            ]
        );
    }

    #[test]
    fn what_is_not_understood_is_refused_with_its_line() {
        let error = args_from("name: a\nlisten-peer-urls: {url: x}\n").unwrap_err();
        assert!(error.starts_with("line 2: YAML beyond"), "{error}");
        let error = args_from("name: a\n  data-dir: /x\n").unwrap_err();
        assert!(error.starts_with("line 2: an indented key outside a nested map"), "{error}");
        let error = args_from("client-transport-security:\n  colour: blue\n").unwrap_err();
        assert!(error.contains("\"colour\" is not a setting of client-transport-security"));
        let error = args_from("name: 'unclosed\n").unwrap_err();
        assert!(error.starts_with("line 1: an unclosed quote"), "{error}");
        assert!(args_from("just words\n").unwrap_err().contains("expected `key: value`"));
    }
}
