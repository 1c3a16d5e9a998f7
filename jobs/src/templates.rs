//! How template names are derived, shared by the API (which lists and validates them) and the
//! workers (which find the Proxmox object a name stands for): both must apply the same rule.

/// The template name of a `vztmpl` archive: the file name up to its first `_` (the version),
/// else without its archive extension. `local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst` →
/// `debian-12-standard`.
pub fn vztmpl_name(volid: &str) -> Option<String> {
    let file = volid.rsplit('/').next()?;
    let name = match file.split_once('_') {
        Some((name, _)) => name,
        None => [".tar.zst", ".tar.gz", ".tar.xz", ".tar.bz2", ".tgz", ".tar"]
            .iter()
            .find_map(|ext| file.strip_suffix(ext))
            .unwrap_or(file),
    };
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_drop_version_and_extension() {
        assert_eq!(
            vztmpl_name("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst").as_deref(),
            Some("debian-12-standard")
        );
        assert_eq!(vztmpl_name("nfs:vztmpl/alpine.tar.xz").as_deref(), Some("alpine"));
        assert_eq!(vztmpl_name("local:vztmpl/_x.tar.gz"), None);
    }
}
