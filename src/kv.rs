//! `key=value` option lists: the arguments of a `--vdev` and of an
//! `--exception` (`tap:IF,gro=off,steer=flow`). One parser and one table
//! per device: the table is what the parser accepts, what an unknown key's
//! error lists, and what `cpumapd --help` prints.

/// One key a device takes.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// The key (`gro`).
    pub name: &'static str,
    /// What its value looks like (`on|off`, `N`, `PATH`).
    pub value: &'static str,
    /// What it does, one line.
    pub help: &'static str,
}

/// A bad `key=value` list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// An item without `=`.
    #[error("'{0}' is not key=value")]
    NotKeyValue(String),
    /// A key no table has.
    #[error("unknown option '{key}' (known: {known})")]
    Unknown {
        /// The key given.
        key: String,
        /// The keys the tables have.
        known: String,
    },
}

/// Splits `a=1,b=2` (empty items skipped) and checks each key against
/// `tables`. The pairs keep their order; a repeated key is repeated.
pub fn parse<'a>(list: &'a str, tables: &[&[Key]]) -> Result<Vec<(&'a str, &'a str)>, KvError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| KvError::NotKeyValue(item.to_string()))?;
        if !tables.iter().any(|t| t.iter().any(|key| key.name == k)) {
            return Err(KvError::Unknown {
                key: k.to_string(),
                known: names(tables),
            });
        }
        out.push((k, v));
    }
    Ok(out)
}

/// The keys of `tables`, comma separated.
pub fn names(tables: &[&[Key]]) -> String {
    tables
        .iter()
        .flat_map(|t| t.iter().map(|k| k.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A switch: `on`/`1` or `off`/`0`, for every device alike.
pub fn on_off(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" | "1" => Ok(true),
        "off" | "0" => Ok(false),
        _ => Err(format!("{key}={value}: expected on or off (1 or 0)")),
    }
}

/// A table as help lines: `  key=VALUE  what it does`.
pub fn render(table: &[Key], indent: usize) -> String {
    let w = table
        .iter()
        .map(|k| k.name.len() + 1 + k.value.len())
        .max()
        .unwrap_or(0);
    table
        .iter()
        .map(|k| {
            let kv = format!("{}={}", k.name, k.value);
            format!("{:indent$}{kv:w$}  {}\n", "", k.help)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &[Key] = &[
        Key {
            name: "gro",
            value: "on|off",
            help: "merge",
        },
        Key {
            name: "size",
            value: "B",
            help: "bytes",
        },
    ];

    #[test]
    fn keys_from_the_table_only_in_order() {
        assert_eq!(
            parse("gro=off,,size=64", &[T]).unwrap(),
            vec![("gro", "off"), ("size", "64")]
        );
        assert_eq!(
            parse("gro", &[T]).unwrap_err(),
            KvError::NotKeyValue("gro".into())
        );
        let e = parse("speed=1", &[T, &T[..1]]).unwrap_err().to_string();
        assert_eq!(e, "unknown option 'speed' (known: gro, size, gro)");
    }

    #[test]
    fn switches_read_alike_everywhere() {
        assert_eq!(on_off("gro", "1"), Ok(true));
        assert_eq!(on_off("gro", "off"), Ok(false));
        assert!(
            on_off("gro", "yes")
                .unwrap_err()
                .contains("expected on or off")
        );
    }

    #[test]
    fn render_aligns() {
        assert_eq!(render(T, 2), "  gro=on|off  merge\n  size=B      bytes\n");
    }
}
