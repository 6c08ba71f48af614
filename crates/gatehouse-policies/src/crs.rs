//! Where the OWASP Core Rule Set is found, and its `.data` phrase files (the lists its
//! `@pmFromFile` rules read). The rules are not shipped with Gatehouse: they are read
//! from an installed CRS, by default the operating system package's.

use std::path::{Path, PathBuf};

/// Rules folders of the CRS packages, in the order they are looked for: Debian and
/// Ubuntu's `modsecurity-crs`, then the paths other distributions and the CRS's own
/// install instructions use.
pub const PACKAGE_DIRS: [&str; 4] = [
    "/usr/share/modsecurity-crs/rules",
    "/etc/modsecurity/crs/rules",
    "/usr/share/owasp-modsecurity-crs/rules",
    "/etc/nginx/modsec/coreruleset/rules",
];

/// The rules folder: `configured` (relative to the config's folder) when given, else
/// the first package folder that exists.
pub fn rules_dir(configured: Option<&str>, config_dir: &Path) -> Result<PathBuf, String> {
    match configured {
        Some(d) => {
            let p = config_dir.join(d);
            if p.is_dir() {
                Ok(p)
            } else {
                Err(format!("{} is not a folder", p.display()))
            }
        }
        None => PACKAGE_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_dir())
            .ok_or_else(|| {
                format!(
                    "no OWASP Core Rule Set found in {}: install the modsecurity-crs package or set crs_dir",
                    PACKAGE_DIRS.join(", ")
                )
            }),
    }
}

/// The phrases of data file `name` in `dir`: one per line, blank lines and `#` comments
/// skipped, as ModSecurity reads them.
pub fn phrases(dir: &Path, name: &str) -> Result<Vec<String>, String> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_skip_comments_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("x.data"),
            "# scanners\n\nnikto\n  sqlmap \n#x\n",
        )
        .unwrap();
        assert_eq!(phrases(dir.path(), "x.data").unwrap(), ["nikto", "sqlmap"]);
        assert!(phrases(dir.path(), "missing.data").is_err());
        assert!(rules_dir(Some("nope"), dir.path()).is_err());
        assert_eq!(
            rules_dir(Some("."), dir.path()).unwrap(),
            dir.path().join(".")
        );
    }
}
