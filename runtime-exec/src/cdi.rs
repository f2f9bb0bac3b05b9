//! CDI, the Container Device Interface (github.com/cncf-tags/container-device-interface):
//! a vendor describes a device as edits to a container's OCI spec (device nodes, mounts,
//! environment), in JSON or YAML files under /etc/cdi and /var/run/cdi. `docker run --device
//! vendor.com/class=name` applies them, and so does BuildKit's `RUN --device`
//! (../shared/specs/dockerfile/reference.md, "RUN --device"); `rbuild run` and `rbuild build`
//! read the same files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::defaults::json_array;
use crate::spec::Spec;
use crate::{Error, Result};

/// Where CDI specs live unless told otherwise; a later directory overrides an earlier one for
/// the same device, as the CDI library's default cache does.
const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// The directories a `--cdi-spec-dir` list names, or CDI's default ones when it is empty.
pub fn spec_dirs(given: &[PathBuf]) -> Vec<PathBuf> {
    if given.is_empty() {
        DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect()
    } else {
        given.to_vec()
    }
}

/// BuildKit's annotations (solver/llbsolver/cdidevices): a device's class, which a request
/// may name instead of the device, and whether a build may use it without `--allow device`.
const CLASS_ANNOTATION: &str = "org.mobyproject.buildkit.device.class";
const AUTO_ALLOW_ANNOTATION: &str = "org.mobyproject.buildkit.device.autoallow";

/// One spec file: a kind (`vendor.com/class`), its devices, and edits that apply once
/// whenever any of them is used.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFile {
    kind: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    devices: Vec<DeviceEntry>,
    #[serde(default)]
    container_edits: ContainerEdits,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceEntry {
    name: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    container_edits: ContainerEdits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerEdits {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    mounts: Vec<CdiMount>,
    #[serde(default)]
    additional_gids: Vec<u32>,
    #[serde(default)]
    hooks: Vec<CdiHook>,
    /// Edits this executor cannot make; a device that needs them is refused, not half-made.
    #[serde(default)]
    intel_rdt: Option<Value>,
    #[serde(default)]
    net_devices: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceNode {
    /// Where the node is made in the container.
    path: String,
    /// The host's node, when it is not at `path`.
    host_path: Option<String>,
    #[serde(rename = "type")]
    typ: Option<String>,
    major: Option<u64>,
    minor: Option<u64>,
    file_mode: Option<u32>,
    /// The device cgroup's access (some of `rwm`); all three when absent.
    permissions: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
}

/// An OCI hook (runtime-spec config.md "POSIX-platform Hooks") and the phase it runs in.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CdiHook {
    hook_name: String,
    path: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    timeout: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CdiMount {
    host_path: String,
    container_path: String,
    #[serde(rename = "type")]
    typ: Option<String>,
    #[serde(default)]
    options: Vec<String>,
}

/// The CDI specs found in a set of directories.
pub struct Registry {
    specs: Vec<(PathBuf, SpecFile)>,
    /// Files that could not be read as specs: named when a request finds nothing.
    broken: Vec<String>,
}

impl Registry {
    /// Reads every `*.json`, `*.yaml` and `*.yml` in `dirs` (a missing directory holds none).
    pub fn load(dirs: &[PathBuf]) -> Registry {
        let mut registry = Registry {
            specs: Vec::new(),
            broken: Vec::new(),
        };
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                    matches!(ext, "json" | "yaml" | "yml")
                })
                .collect();
            files.sort();
            for file in files {
                match read_spec(&file) {
                    Ok(spec) => registry.specs.push((file, spec)),
                    Err(e) => registry.broken.push(format!("{}: {e}", file.display())),
                }
            }
        }
        registry
    }

    /// Every device, by qualified name (`vendor.com/class=name`), sorted; for a name defined
    /// more than once, the last definition read.
    fn devices(&self) -> BTreeMap<String, (&SpecFile, &DeviceEntry)> {
        let mut all = BTreeMap::new();
        for (_, spec) in &self.specs {
            for device in &spec.devices {
                all.insert(format!("{}={}", spec.kind, device.name), (spec, device));
            }
        }
        all
    }

    /// The devices a request names, as BuildKit resolves `RUN --device` (cdidevices
    /// manager): `vendor.com/class` is the first device of that kind, `vendor.com/class=*`
    /// all of them, `vendor.com/class=NAME` the device NAME, or else those whose class
    /// annotation is NAME. Empty when nothing matches.
    pub fn find(&self, request: &str) -> Result<Vec<String>> {
        let (kind, name) = request.split_once('=').unwrap_or((request, ""));
        if !valid_kind(kind) {
            return Err(Error::Cdi(format!(
                "invalid device {request:?}: a CDI device is named vendor.com/class[=name]"
            )));
        }
        let devices = self.devices();
        let of_kind = devices
            .iter()
            .filter(|(qualified, _)| qualified.split_once('=').map(|(k, _)| k) == Some(kind));
        let found: Vec<String> = match name {
            "" => of_kind.take(1).map(|(q, _)| q.clone()).collect(),
            "*" => of_kind.map(|(q, _)| q.clone()).collect(),
            _ if devices.contains_key(request) => vec![request.to_string()],
            _ => of_kind
                .filter(|(_, (spec, device))| {
                    annotation(spec, device, CLASS_ANNOTATION) == Some(name)
                })
                .map(|(q, _)| q.clone())
                .collect(),
        };
        Ok(found)
    }

    /// Why a request found nothing: the directories' unreadable files, if any.
    pub fn not_found_message(&self, request: &str) -> String {
        let mut message = format!("CDI device {request:?} is not registered");
        if !self.broken.is_empty() {
            message.push_str(&format!(
                " (unreadable CDI specs: {})",
                self.broken.join("; ")
            ));
        }
        message
    }

    /// Whether a build may use the device without the `device` entitlement: BuildKit's
    /// autoallow annotation on the device or on its spec.
    pub fn auto_allowed(&self, qualified: &str) -> bool {
        self.devices().get(qualified).is_some_and(|(spec, device)| {
            annotation(spec, device, AUTO_ALLOW_ANNOTATION).is_some_and(|v| v == "true" || v == "1")
        })
    }

    /// Applies the devices' edits to `spec`: each spec file's common edits once, then each
    /// device's own. Environment entries replace the same variable; device nodes are made
    /// with the host node's type, numbers and mode where the spec leaves them out, and the
    /// device cgroup allows them.
    pub fn inject(&self, spec: &mut Spec, qualified: &[String]) -> Result<()> {
        let devices = self.devices();
        let mut edits: Vec<(&str, &ContainerEdits)> = Vec::new();
        let mut files_done: Vec<&SpecFile> = Vec::new();
        for name in qualified {
            let Some((file, device)) = devices.get(name) else {
                return Err(Error::Cdi(self.not_found_message(name)));
            };
            if !files_done.iter().any(|done| std::ptr::eq(*done, *file)) {
                files_done.push(file);
                edits.push((name, &file.container_edits));
            }
            edits.push((name, &device.container_edits));
        }
        let encode = |e: serde_json::Error| Error::InvalidSpec(format!("CDI edits: {e}"));
        let mut value = serde_json::to_value(&*spec).map_err(encode)?;
        for (name, edit) in edits {
            apply(&mut value, name, edit)?;
        }
        *spec = serde_json::from_value(value).map_err(encode)?;
        Ok(())
    }
}

/// Whether `--device VALUE` names a CDI device rather than a host path (docker's test:
/// a qualified `vendor.com/class=name`).
pub fn is_qualified_name(value: &str) -> bool {
    value
        .split_once('=')
        .is_some_and(|(kind, name)| valid_kind(kind) && !name.is_empty())
}

fn read_spec(file: &Path) -> std::result::Result<SpecFile, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    // JSON is YAML, so one parser reads both.
    let spec: SpecFile = serde_yaml::from_str(&text).map_err(|e| e.to_string())?;
    if !valid_kind(&spec.kind) {
        return Err(format!("kind {:?} is not vendor.com/class", spec.kind));
    }
    Ok(spec)
}

/// `vendor.com/class`: a vendor of DNS labels and a class, each of letters, digits, `-`, `_`
/// and `.`, starting with a letter and ending with a letter or digit (CDI's parser).
fn valid_kind(kind: &str) -> bool {
    let valid_part = |part: &str| {
        part.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && part
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    matches!(kind.split_once('/'), Some((vendor, class)) if valid_part(vendor) && valid_part(class))
}

/// A device's annotation, else its spec's.
fn annotation<'a>(spec: &'a SpecFile, device: &'a DeviceEntry, key: &str) -> Option<&'a str> {
    device
        .annotations
        .get(key)
        .or_else(|| spec.annotations.get(key))
        .map(String::as_str)
}

fn apply(spec: &mut Value, device: &str, edits: &ContainerEdits) -> Result<()> {
    let refuse = |what: &str| {
        Err(Error::Cdi(format!(
            "CDI device {device:?} needs {what}, which rbuild's executor does not support"
        )))
    };
    if edits.intel_rdt.is_some() {
        return refuse("Intel RDT settings");
    }
    if !edits.net_devices.is_empty() {
        return refuse("network devices");
    }
    for entry in &edits.env {
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        let env = json_array(&mut spec["process"]["env"]);
        env.retain(|e| e.as_str().and_then(|e| e.split_once('=')).map(|(k, _)| k) != Some(key));
        env.push(json!(entry));
    }
    for node in &edits.device_nodes {
        let (entry, rule) = device_node(device, node)?;
        let devices = json_array(&mut spec["linux"]["devices"]);
        devices.retain(|d| d["path"] != entry["path"]);
        devices.push(entry);
        json_array(&mut spec["linux"]["resources"]["devices"]).push(rule);
    }
    for mount in &edits.mounts {
        let mounts = json_array(&mut spec["mounts"]);
        mounts.retain(|m| m["destination"] != mount.container_path.as_str());
        let mut entry = json!({
            "destination": mount.container_path,
            "source": mount.host_path,
            "options": mount.options,
        });
        if let Some(typ) = &mount.typ {
            entry["type"] = json!(typ);
        }
        mounts.push(entry);
    }
    for hook in &edits.hooks {
        // CDI's hook names are the keys of the Spec's `hooks`.
        if !crate::hooks::ALL.iter().any(|p| p.name() == hook.hook_name) {
            return Err(Error::Cdi(format!(
                "CDI device {device:?}: unknown hookName {:?}",
                hook.hook_name
            )));
        }
        let mut entry = json!({ "path": hook.path });
        if !hook.args.is_empty() {
            entry["args"] = json!(hook.args);
        }
        if !hook.env.is_empty() {
            entry["env"] = json!(hook.env);
        }
        if let Some(timeout) = hook.timeout {
            entry["timeout"] = json!(timeout);
        }
        json_array(&mut spec["hooks"][hook.hook_name.as_str()]).push(entry);
    }
    let gids = json_array(&mut spec["process"]["user"]["additionalGids"]);
    for gid in &edits.additional_gids {
        if !gids.contains(&json!(gid)) {
            gids.push(json!(gid));
        }
    }
    Ok(())
}

/// A device node's spec entry and device cgroup rule; what the CDI spec leaves out is read
/// from the host's node (following a symlink, as CDI does).
fn device_node(device: &str, node: &DeviceNode) -> Result<(Value, Value)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let host = node.host_path.as_deref().unwrap_or(&node.path);
    // A node the spec describes whole need not exist on the host (CDI stats only to fill in).
    let complete = node.typ.is_some() && node.major.is_some() && node.minor.is_some();
    let host_meta =
        if complete {
            None
        } else {
            Some(std::fs::metadata(host).map_err(|e| {
                Error::Cdi(format!("CDI device {device:?}: device node {host}: {e}"))
            })?)
        };
    let host_type = host_meta.as_ref().map(|m| {
        let kind = m.file_type();
        if kind.is_block_device() {
            "b"
        } else if kind.is_char_device() {
            "c"
        } else if kind.is_fifo() {
            "p"
        } else {
            ""
        }
    });
    let typ = match (&node.typ, host_type) {
        (Some(t), Some(h)) if t != h => {
            return Err(Error::Cdi(format!(
                "CDI device {device:?}: {host} is not of type {t}"
            )))
        }
        (Some(t), _) => t.clone(),
        (None, Some("")) | (None, None) => {
            return Err(Error::Cdi(format!(
                "CDI device {device:?}: {host} is not a device"
            )))
        }
        (None, Some(h)) => h.to_string(),
    };
    let rdev = host_meta.as_ref().map(|m| m.rdev()).unwrap_or_default();
    let major = node.major.unwrap_or(nix::sys::stat::major(rdev));
    let minor = node.minor.unwrap_or(nix::sys::stat::minor(rdev));
    let mode = node
        .file_mode
        .or_else(|| host_meta.as_ref().map(|m| m.mode() & 0o7777));
    let access = node.permissions.clone().unwrap_or_else(|| "rwm".into());
    if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
        return Err(Error::Cdi(format!(
            "CDI device {device:?}: permissions {access:?}: only r, w and m"
        )));
    }
    let mut entry = json!({ "path": node.path, "type": typ, "major": major, "minor": minor });
    for (key, value) in [("fileMode", mode), ("uid", node.uid), ("gid", node.gid)] {
        if let Some(v) = value {
            entry[key] = json!(v);
        }
    }
    let rule =
        json!({ "allow": true, "type": typ, "major": major, "minor": minor, "access": access });
    Ok((entry, rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VENDOR1: &str = r#"
cdiVersion: "0.6.0"
kind: "vendor1.com/device"
containerEdits:
  env: [COMMON=1]
devices:
  - name: foo
    containerEdits:
      env: [FOO=injected, PATH=/cdi]
      deviceNodes:
        - path: /dev/foo
          hostPath: /dev/null
          permissions: rw
  - name: bar
    annotations:
      org.mobyproject.buildkit.device.class: class1
      org.mobyproject.buildkit.device.autoallow: "true"
    containerEdits:
      env: [BAR=1]
      mounts:
        - hostPath: /etc/hostname
          containerPath: /etc/bar
          options: [ro, bind]
  - name: baz
    annotations:
      org.mobyproject.buildkit.device.class: class1
"#;

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let (etc, run) = (dir.path().join("etc"), dir.path().join("run"));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(etc.join("vendor1.yaml"), VENDOR1).unwrap();
        std::fs::write(
            run.join("gpu.json"),
            r#"{"cdiVersion":"0.6.0","kind":"vendor2.com/gpu","devices":[{"name":"0",
                "containerEdits":{"hooks":[{"hookName":"createContainer","path":"/bin/true",
                "args":["true","x"],"timeout":5}]}},
                {"name":"1","containerEdits":{"hooks":[{"hookName":"later","path":"/bin/true"}]}}]}"#,
        )
        .unwrap();
        std::fs::write(run.join("broken.json"), "{not a spec").unwrap();
        // A second file of the same kind, with common edits of its own and a node described
        // whole, which need not exist on the host.
        std::fs::write(
            run.join("vendor1-more.yaml"),
            "cdiVersion: 0.6.0\nkind: vendor1.com/device\ncontainerEdits: {env: [MORE=1]}\n\
             devices:\n- name: whole\n  containerEdits:\n    deviceNodes:\n    \
             - {path: /dev/made-up, type: c, major: 1, minor: 3}\n",
        )
        .unwrap();
        let registry = Registry::load(&[etc, run]);
        (dir, registry)
    }

    #[test]
    fn requests_resolve_as_buildkit_resolves_them() {
        let (_dir, r) = registry();
        let names = |req: &str| r.find(req).unwrap();
        assert_eq!(names("vendor1.com/device"), ["vendor1.com/device=bar"]);
        assert_eq!(names("vendor1.com/device=*").len(), 4);
        assert_eq!(names("vendor1.com/device=foo"), ["vendor1.com/device=foo"]);
        assert_eq!(
            names("vendor1.com/device=class1"),
            ["vendor1.com/device=bar", "vendor1.com/device=baz"]
        );
        assert!(names("vendor1.com/device=nope").is_empty());
        assert!(r.find("class1").is_err());
        assert!(r.not_found_message("x.com/y=z").contains("broken.json"));
        assert!(r.auto_allowed("vendor1.com/device=bar"));
        assert!(!r.auto_allowed("vendor1.com/device=foo"));
        assert!(is_qualified_name("vendor.com/class=x"));
        assert!(!is_qualified_name("/dev/kmsg"));
        assert!(!is_qualified_name("vendor.com/class"));
    }

    #[test]
    fn edits_apply_to_the_spec() {
        let (_dir, r) = registry();
        let mut spec =
            crate::defaults::docker_spec(Path::new("/tmp/rootfs"), &["sh".to_string()]).unwrap();
        let names = ["foo", "bar", "whole"].map(|d| format!("vendor1.com/device={d}"));
        r.inject(&mut spec, &names).unwrap();
        let value = serde_json::to_value(&spec).unwrap();
        let env: Vec<&str> = value["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for expected in ["FOO=injected", "BAR=1", "COMMON=1", "PATH=/cdi", "MORE=1"] {
            assert_eq!(env.iter().filter(|e| **e == expected).count(), 1, "{env:?}");
        }
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        let node = value["linux"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["path"] == "/dev/foo")
            .unwrap();
        assert_eq!(
            (&node["type"], &node["major"], &node["minor"]),
            (&json!("c"), &json!(1), &json!(3))
        );
        assert!(value["linux"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["path"] == "/dev/made-up" && d.get("fileMode").is_none()));
        let rules = value["linux"]["resources"]["devices"].as_array().unwrap();
        assert!(rules
            .iter()
            .any(|d| d["major"] == 1 && d["minor"] == 3 && d["access"] == "rw"));
        assert!(value["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/etc/bar" && m["source"] == "/etc/hostname"));
        crate::validate::check(&spec).unwrap();

        r.inject(&mut spec, &["vendor2.com/gpu=0".to_string()])
            .unwrap();
        let value = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            value["hooks"]["createContainer"],
            json!([{"path": "/bin/true", "args": ["true", "x"], "timeout": 5}])
        );
        crate::validate::check(&spec).unwrap();
        let unknown = r.inject(&mut spec, &["vendor2.com/gpu=1".to_string()]);
        assert!(unknown.unwrap_err().to_string().contains("\"later\""));
    }
}
