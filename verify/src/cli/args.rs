//! The one argument parser of every subcommand (the matrix, `check`, `export`, `bench`), by
//! hand: a subcommand is a [`Spec`] (its name, usage text and flags), and [`parse`] turns its
//! arguments into [`Matches`] (flags with their raw values, positionals), which the subcommand
//! converts with [`Matches::get`] (a bad value is a usage error naming the flag).
//!
//! Rules, the same everywhere:
//!
//! - `--flag=value` and `--flag value` are the same; in the second form the next argument is
//!   the value whatever it looks like (`--dt-limit -0.1,0.1` is a bad value of `--dt-limit`);
//! - a flag given twice keeps its last value (each is checked), unless it repeats
//!   ([`Flag::repeats`], e.g. `bench --shape`), where every value counts;
//! - an unknown flag, a missing value or a value given to a flag that takes none is a usage error
//!   (exit status 2) naming the flag;
//! - `--json` (one JSON array of row objects), `--help`/`-h` (the subcommand's usage, exit 0) and
//!   `--version`/`-V` (exit 0) are flags of every subcommand; `--help` and `--version` win over
//!   anything else on the line;
//! - `--` ends the flags: what follows is positional (a FILE whose name starts with `-`).

use super::CliError;

/// One flag of a subcommand.
#[derive(Debug)]
pub struct Flag {
    /// `--name`.
    pub name: &'static str,
    /// Whether it takes a value (`--name=V` or `--name V`).
    pub takes_value: bool,
    /// Whether every occurrence counts (otherwise the last one does).
    pub repeats: bool,
}

impl Flag {
    /// A flag with a value; the last occurrence counts.
    pub const fn value(name: &'static str) -> Flag {
        Flag {
            name,
            takes_value: true,
            repeats: false,
        }
    }

    /// A flag with a value; every occurrence counts.
    pub const fn repeated(name: &'static str) -> Flag {
        Flag {
            name,
            takes_value: true,
            repeats: true,
        }
    }

    /// A flag without a value (a switch).
    pub const fn switch(name: &'static str) -> Flag {
        Flag {
            name,
            takes_value: false,
            repeats: false,
        }
    }
}

/// The flags every subcommand takes besides its own (`--help`/`-h`, `--version`/`-V` are
/// handled before these).
pub static COMMON_FLAGS: [Flag; 1] = [Flag::switch("--json")];

/// A subcommand: its name, usage text and flags.
#[derive(Debug)]
pub struct Spec {
    /// `check`, `export`, `bench`; empty for the matrix (no subcommand).
    pub name: &'static str,
    /// What `--help` prints and a usage error shows.
    pub usage: &'static str,
    /// Its own flags (the [`COMMON_FLAGS`] come on top).
    pub flags: &'static [Flag],
}

impl Spec {
    /// A usage error of this subcommand: `message` prefixed by the subcommand's name, then its
    /// usage text.
    pub fn error(&'static self, message: impl std::fmt::Display) -> CliError {
        let message = if self.name.is_empty() {
            message.to_string()
        } else {
            format!("{}: {message}", self.name)
        };
        CliError::Usage {
            message,
            usage: self.usage,
        }
    }

    fn flag(&self, name: &str) -> Option<&'static Flag> {
        self.flags
            .iter()
            .chain(COMMON_FLAGS.iter())
            .find(|f| f.name == name)
    }
}

/// What a command line asked for.
#[derive(Debug)]
pub enum Parsed {
    /// `--help` or `-h`: print the subcommand's usage.
    Help,
    /// `--version` or `-V`: print the version.
    Version,
    /// Flags and positionals, not yet converted.
    Matches(Matches),
}

/// The flags and positionals of one subcommand's command line, values as given.
#[derive(Debug)]
pub struct Matches {
    /// The subcommand.
    pub spec: &'static Spec,
    given: Vec<(&'static str, Option<String>)>,
    /// The arguments that are not flags or their values, in order.
    pub positionals: Vec<String>,
}

/// Parses the arguments of the subcommand `spec` (after its name).
pub fn parse(spec: &'static Spec, args: &[String]) -> Result<Parsed, CliError> {
    let flags_part = args.split(|a| a == "--").next().unwrap_or(&[]);
    if flags_part.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Parsed::Help);
    }
    if flags_part.iter().any(|a| a == "--version" || a == "-V") {
        return Ok(Parsed::Version);
    }
    let mut m = Matches {
        spec,
        given: Vec::new(),
        positionals: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            m.positionals.extend(it.by_ref().cloned());
            break;
        }
        if !a.starts_with('-') || a == "-" {
            m.positionals.push(a.clone());
            continue;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v)),
            _ => (a.as_str(), None),
        };
        let flag = spec
            .flag(name)
            .ok_or_else(|| spec.error(format!("unknown flag `{name}`")))?;
        let value = match (flag.takes_value, inline) {
            (true, Some(v)) => Some(v.to_string()),
            (true, None) => Some(
                it.next()
                    .ok_or_else(|| spec.error(format!("{name} needs a value")))?
                    .clone(),
            ),
            (false, Some(v)) => {
                return Err(spec.error(format!("{name} takes no value (given `{v}`)")))
            }
            (false, None) => None,
        };
        m.given.push((flag.name, value));
    }
    Ok(Parsed::Matches(m))
}

impl Matches {
    /// Whether the flag was given.
    pub fn has(&self, flag: &str) -> bool {
        self.given.iter().any(|(n, _)| *n == flag)
    }

    /// Every value given to `flag`, in order.
    pub fn all(&self, flag: &str) -> Vec<&str> {
        self.given
            .iter()
            .filter(|(n, _)| *n == flag)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }

    /// The value of `flag` converted by `convert`, the last one where it was given more than
    /// once (each is converted); a value `convert` rejects is a usage error naming the flag and
    /// saying what was `expected`.
    pub fn get<T>(
        &self,
        flag: &str,
        expected: &str,
        convert: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, CliError> {
        let mut out = None;
        for v in self.all(flag) {
            out = Some(
                convert(v)
                    .ok_or_else(|| self.error(format!("{flag} `{v}`: expected {expected}")))?,
            );
        }
        Ok(out)
    }

    /// `--json`.
    pub fn json(&self) -> bool {
        self.has("--json")
    }

    /// A usage error of this subcommand.
    pub fn error(&self, message: impl std::fmt::Display) -> CliError {
        self.spec.error(message)
    }

    /// The single positional argument (`what` names it in the error when there are none or
    /// several).
    pub fn one_positional(&self, what: &str) -> Result<&str, CliError> {
        match self.positionals.as_slice() {
            [one] => Ok(one),
            [] => Err(self.error(format!("needs {what}"))),
            [_, extra, ..] => Err(self.error(format!("takes one {what} (unexpected `{extra}`)"))),
        }
    }
}

/// A positive integer.
pub fn positive(v: &str) -> Option<usize> {
    v.trim().parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    static SPEC: Spec = Spec {
        name: "demo",
        usage: "usage: demo",
        flags: &[
            Flag::value("--n"),
            Flag::repeated("--shape"),
            Flag::switch("--fast"),
        ],
    };

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn matches(a: &[&str]) -> Result<Matches, CliError> {
        match parse(&SPEC, &strings(a))? {
            Parsed::Matches(m) => Ok(m),
            other => panic!("{other:?}"),
        }
    }

    fn message(e: CliError) -> String {
        e.to_string()
    }

    #[test]
    fn both_value_forms_agree() {
        for a in [&["--n", "3", "f"][..], &["--n=3", "f"], &["f", "--n=3"]] {
            let m = matches(a).unwrap();
            assert_eq!(m.get("--n", "n", positive).unwrap(), Some(3), "{a:?}");
            assert_eq!(m.positionals, ["f"], "{a:?}");
        }
        let m = matches(&["--shape=1,2", "--shape", "S1", "--n", "-4", "--n=5"]).unwrap();
        assert_eq!(m.all("--shape"), ["1,2", "S1"]);
        // every value is checked, the last counts
        let e = message(m.get("--n", "a positive integer", positive).unwrap_err());
        assert!(e.contains("--n `-4`: expected a positive integer"), "{e}");
        let m = matches(&["--n=", "x"]).unwrap();
        assert_eq!(m.all("--n"), [""]);
        assert_eq!(m.positionals, ["x"]);
    }

    #[test]
    fn errors_name_the_flag() {
        let e = message(matches(&["--bogus=1"]).unwrap_err());
        assert!(
            e.starts_with("demo: unknown flag `--bogus`") && e.contains("usage"),
            "{e}"
        );
        let e = message(matches(&["x", "--n"]).unwrap_err());
        assert!(e.contains("--n needs a value"), "{e}");
        let e = message(matches(&["--fast=yes"]).unwrap_err());
        assert!(e.contains("--fast takes no value"), "{e}");
        let e = message(matches(&["-x"]).unwrap_err());
        assert!(e.contains("unknown flag `-x`"), "{e}");
    }

    #[test]
    fn help_version_json_and_double_dash() {
        assert!(matches!(
            parse(&SPEC, &strings(&["--bogus", "-h"])),
            Ok(Parsed::Help)
        ));
        assert!(matches!(
            parse(&SPEC, &strings(&["--version"])),
            Ok(Parsed::Version)
        ));
        let m = matches(&["--json", "--fast", "--", "--help", "-f"]).unwrap();
        assert!(m.json() && m.has("--fast") && !m.has("--n"));
        assert_eq!(m.positionals, ["--help", "-f"]);
        assert!(m.one_positional("FILE").is_err());
        let m = matches(&[]).unwrap();
        let e = message(m.one_positional("a FILE").unwrap_err());
        assert!(e.contains("demo: needs a FILE"), "{e}");
    }
}
