//! Interpreting stages: FROM, ARG scoping, config instructions, and the filesystem steps
//! (RUN, COPY/ADD, WORKDIR) with their cache keys.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};

use image_store::{CacheRecord, CachedLayer, Store};
use oci::image::{History, ImageConfig};
use oci::{Descriptor, Digest};

use super::progress::{Progress, Step, StepStatus};
use super::remote_cache::RemoteCache;
use super::{key_of, BuildError, BuildOptions, ImageFetcher, NamedContext};
use crate::context::{BuildContext, ContextError, CopyEntry, StatCache};
use crate::dockerfile::instructions::{ArgDef, Located, Run};
use crate::dockerfile::shell::Lex;
use crate::dockerfile::{undefined_var, CheckWarning, Dockerfile, Instruction};
use crate::image_config::{self, Scope};

/// Proxy args: usable in RUN without an ARG and left out of cache keys and history
/// (reference.md, "Predefined ARGs").
pub(crate) const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// One layer of a stage's filesystem.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
}

/// Where a stage stands after some of its instructions.
#[derive(Debug, Clone)]
pub(crate) struct StageState {
    pub layers: Vec<Layer>,
    pub config: ImageConfig,
    /// Cache key of the filesystem: changes with every filesystem step.
    pub fs_key: Digest,
    /// ARGs declared in this stage, with their values (unset ones are absent).
    pub args: BTreeMap<String, String>,
    /// ARGs this stage declared, with or without a value: using one is no UndefinedVar.
    pub declared_args: BTreeSet<String>,
    /// How many of `layers` are the base image's (`--squash` keeps those).
    pub base_layers: usize,
    /// A CMD of this stage was applied: a later ENTRYPOINT keeps it (BuildKit's `cmdSet`).
    pub cmd_set: bool,
}

/// A filesystem step's result, as cached.
pub(crate) struct StepOutput {
    pub key: Digest,
    pub layer: Option<Layer>,
    pub created: String,
}

/// One image's fetch: its outcome, once it has one.
type Fetch = OnceLock<Result<(), String>>;

pub(crate) struct Solver<'a> {
    pub store: &'a Store,
    pub dockerfile: &'a Dockerfile,
    pub options: &'a BuildOptions,
    pub progress: &'a Progress,
    pub lex: Lex,
    /// The build context, with its .dockerignore.
    pub context: BuildContext,
    /// Content hashes of context files, kept between builds (shared by parallel stages).
    stat_cache: Mutex<StatCache>,
    /// Global ARG values, for FROM lines and for stage ARGs without a default.
    global_args: BTreeMap<String, String>,
    /// Each stage solved at most once, whoever needs it first.
    results: Vec<OnceLock<Result<Arc<StageState>, String>>>,
    /// `--cache-from` records and the steps to `--cache-to` (see `remote_cache`).
    pub remote_cache: RemoteCache,
    /// Images fetched by this build, each once, however many stages name it.
    fetched: Mutex<BTreeMap<String, Arc<Fetch>>>,
    /// The directories of `--build-context`, opened as contexts.
    named_contexts: BTreeMap<String, BuildContext>,
    /// UndefinedVar findings, which need each stage's variables as the build has them.
    lint: Mutex<Vec<CheckWarning>>,
    /// Only evaluating the stages for the build checks: no RUN runs, nothing is copied.
    checking: bool,
    /// The CDI specs, read when a `RUN --device` first needs them.
    cdi: OnceLock<runtime_exec::cdi::Registry>,
}

impl<'a> Solver<'a> {
    pub fn new(
        store: &'a Store,
        dockerfile: &'a Dockerfile,
        options: &'a BuildOptions,
        progress: &'a Progress,
    ) -> Result<Self, BuildError> {
        let lex = Lex::new(dockerfile.escape);
        let mut global_args = platform_args(options);
        for located in &dockerfile.global_args {
            for def in &located.value {
                let value = match options.build_args.get(&def.name) {
                    Some(v) => Some(v.clone()),
                    None => match &def.default {
                        Some(d) => Some(
                            lex.process_word(d, &global_args)
                                .map_err(|e| step_error(located, e))?,
                        ),
                        None => None,
                    },
                };
                match value {
                    Some(v) => global_args.insert(def.name.clone(), v),
                    None => global_args.remove(&def.name),
                };
            }
        }
        let results = dockerfile.stages.iter().map(|_| OnceLock::new()).collect();
        let context = BuildContext::open(&options.context, options.dockerfile_path.as_deref())
            .map_err(|e| BuildError::Other(e.to_string()))?;
        let mut named_contexts = BTreeMap::new();
        for (name, named) in &options.named_contexts {
            if let NamedContext::Directory(dir) = named {
                let opened = BuildContext::open(dir, None)
                    .map_err(|e| BuildError::Other(format!("--build-context {name}: {e}")))?;
                named_contexts.insert(name.clone(), opened);
            }
        }
        let stat_cache = StatCache::open(&store.root().join("cache").join("context"))
            .map_err(|e| BuildError::Other(e.to_string()))?;
        Ok(Solver {
            store,
            dockerfile,
            options,
            progress,
            lex,
            context,
            stat_cache: Mutex::new(stat_cache),
            global_args,
            results,
            remote_cache: RemoteCache::import(store, &options.cache_from, progress)?,
            fetched: Mutex::new(BTreeMap::new()),
            named_contexts,
            lint: Mutex::new(Vec::new()),
            checking: false,
            cdi: OnceLock::new(),
        })
    }

    /// The CDI specs of `--cdi-spec-dir` (or the default directories), read once.
    pub fn cdi(&self) -> &runtime_exec::cdi::Registry {
        self.cdi
            .get_or_init(|| runtime_exec::cdi::Registry::load(&self.options.cdi_spec_dirs))
    }

    /// This solver only evaluates stages, for the build checks: FROM resolves base images
    /// (their configs hold variables), ARG, ENV and the other config instructions apply, and
    /// COPY/ADD words are expanded; RUN, COPY, ADD and WORKDIR make no layer.
    pub fn only_checking(mut self) -> Self {
        self.checking = true;
        self
    }

    /// The content checksum of entries of `context`, through the stat cache.
    pub fn checksum(
        &self,
        context: &BuildContext,
        entries: &[CopyEntry],
    ) -> Result<Digest, ContextError> {
        let mut cache = self
            .stat_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        context.checksum(entries, &mut cache)
    }

    /// A context sources are read from: the build context, or the directory of a
    /// `--build-context` of that name.
    pub fn source_context(&self, name: Option<&str>) -> &BuildContext {
        name.and_then(|n| self.named_contexts.get(n))
            .unwrap_or(&self.context)
    }

    /// Whether `name` is a `--build-context` directory.
    pub fn is_named_directory(&self, name: &str) -> bool {
        self.named_contexts.contains_key(name)
    }

    /// Notes the variables an instruction's words used that nothing set, and that no ARG of
    /// the stage declares (BuildKit's UndefinedVar check).
    pub fn note_unset(
        &self,
        state: &StageState,
        at: &Located<Instruction>,
        unset: &BTreeSet<String>,
    ) {
        let undeclared: Vec<&String> = unset
            .iter()
            .filter(|name| !state.declared_args.contains(*name))
            .collect();
        if undeclared.is_empty() {
            return;
        }
        let scope = Scope::new(&state.config, &state.args);
        let mut defined: BTreeSet<&str> = scope.env_names().collect();
        defined.extend(state.args.keys().map(String::as_str));
        let mut lint = self.lint.lock().unwrap_or_else(|p| p.into_inner());
        for name in undeclared {
            lint.push(undefined_var(name, defined.iter().copied(), at.line));
        }
    }

    /// What the build found for the UndefinedVar check, in line order, each once.
    pub fn lint(&self) -> Vec<CheckWarning> {
        let mut lint = self.lint.lock().unwrap_or_else(|p| p.into_inner()).clone();
        lint.sort_by(|a, b| (a.line, &a.message).cmp(&(b.line, &b.message)));
        lint.dedup();
        lint
    }

    /// Keeps the hashes computed by this build for the next one.
    pub fn save_stat_cache(&self) -> Result<(), BuildError> {
        let mut cache = self
            .stat_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.save().map_err(|e| BuildError::Other(e.to_string()))
    }

    /// The stage `--target` names, or the last one.
    pub fn target_stage(&self) -> Result<usize, BuildError> {
        match &self.options.target {
            Some(name) => self.dockerfile.stage(name).map(|(i, _)| i).ok_or_else(|| {
                BuildError::Other(format!("target stage {name:?} could not be found"))
            }),
            None => Ok(self.dockerfile.stages.len() - 1),
        }
    }

    /// Whether the layers stage `index` adds end up in the built image: those of the target
    /// stage do, all of them, since the image is that stage's final state.
    fn in_image(&self, index: usize) -> bool {
        self.target_stage().is_ok_and(|target| target == index)
    }

    /// Solves stage `index` (and, first, the stages it needs, in parallel).
    pub fn solve(&self, index: usize) -> Result<Arc<StageState>, BuildError> {
        self.results[index]
            .get_or_init(|| {
                self.solve_uncached(index)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(BuildError::Other)
    }

    fn solve_uncached(&self, index: usize) -> Result<StageState, BuildError> {
        let deps = self.dependencies(index)?;
        std::thread::scope(|scope| -> Result<(), BuildError> {
            let handles: Vec<_> = deps
                .iter()
                .map(|&d| scope.spawn(move || self.solve(d)))
                .collect();
            for handle in handles {
                handle
                    .join()
                    .map_err(|_| BuildError::other("a build thread panicked"))??;
            }
            Ok(())
        })?;
        let stage = &self.dockerfile.stages[index];
        let mut state = self.from(index)?;
        for instruction in &stage.instructions {
            self.apply(index, &mut state, instruction)?;
        }
        Ok(state)
    }

    /// Stages that stage `index` reads from: its FROM, COPY --from and RUN --mount from=.
    fn dependencies(&self, index: usize) -> Result<Vec<usize>, BuildError> {
        let stage = &self.dockerfile.stages[index];
        let mut names = vec![self.expand_global(&stage.from.value.image, &stage.from)?];
        for located in &stage.instructions {
            match &located.value {
                Instruction::Copy(copy) => names.extend(copy.from.clone()),
                Instruction::Run(run) => names.extend(run_mount_sources(run)),
                _ => {}
            }
        }
        let mut deps: Vec<usize> = names
            .iter()
            .filter_map(|n| self.stage_index(n, index))
            .collect();
        deps.sort_unstable();
        deps.dedup();
        Ok(deps)
    }

    /// The index of an earlier stage called `name` (a stage name or a number).
    pub fn stage_index(&self, name: &str, before: usize) -> Option<usize> {
        // A named context replaces a stage of the same name (buildx's rule).
        if self.options.named_contexts.contains_key(name) {
            return None;
        }
        self.dockerfile
            .stage(name)
            .map(|(i, _)| i)
            .filter(|&i| i < before)
    }

    fn expand_global<T>(&self, word: &str, at: &Located<T>) -> Result<String, BuildError> {
        self.lex
            .process_word(word, &self.global_args)
            .map_err(|e| step_error(at, e))
    }

    /// The state FROM starts a stage with.
    fn from(&self, index: usize) -> Result<StageState, BuildError> {
        let from = &self.dockerfile.stages[index].from;
        let image = self.expand_global(&from.value.image, from)?;
        let step = self.progress.step(index, &format!("FROM {image}"));
        if let Some(dep) = self.stage_index(&image, index) {
            let parent = self.solve(dep)?;
            step.finish(StepStatus::Done);
            let mut state = (*parent).clone();
            state.args.clear();
            state.declared_args.clear();
            state.cmd_set = false;
            return Ok(state);
        }
        let scratch = || StageState {
            layers: Vec::new(),
            config: ImageConfig::for_platform(&self.options.platform),
            fs_key: key_of(&[b"scratch"]),
            args: BTreeMap::new(),
            declared_args: BTreeSet::new(),
            base_layers: 0,
            cmd_set: false,
        };
        if image == "scratch" {
            step.finish(StepStatus::Done);
            return Ok(scratch());
        }
        if self.is_named_directory(&image) {
            // As BuildKit: the directory's files (less its .dockerignore) are the stage's
            // filesystem, with no image config; here one COPY of them onto scratch, so they are
            // one layer, keyed by their content like any COPY.
            step.finish(StepStatus::Done);
            let mut state = scratch();
            let copy = format!("COPY --from={image} . /");
            self.apply_text(index, &mut state, &copy, &copy, from)?;
            return Ok(state);
        }
        let (layers, manifest_digest, mut config) =
            self.image(&image).map_err(|e| step_error(from, e))?;
        let triggers = config
            .config
            .as_mut()
            .map(|c| std::mem::take(&mut c.on_build))
            .unwrap_or_default();
        step.finish(StepStatus::Done);
        let mut state = StageState {
            base_layers: layers.len(),
            layers,
            config,
            fs_key: key_of(&[b"image", manifest_digest.as_str().as_bytes()]),
            args: BTreeMap::new(),
            declared_args: BTreeSet::new(),
            cmd_set: false,
        };
        // ONBUILD triggers of the base image run first (reference.md, "ONBUILD").
        for trigger in triggers {
            let original = format!("ONBUILD {trigger}");
            self.apply_text(index, &mut state, &trigger, &original, from)?;
        }
        Ok(state)
    }

    /// Applies instructions that are not in the Dockerfile (a base image's ONBUILD trigger, the
    /// COPY that makes a directory a stage) as if they stood on the FROM line `at`, shown as
    /// `original`.
    fn apply_text<T>(
        &self,
        index: usize,
        state: &mut StageState,
        text: &str,
        original: &str,
        at: &Located<T>,
    ) -> Result<(), BuildError> {
        let tree = crate::dockerfile::parse(text)?;
        for node in &tree.ast.children {
            let instruction = Located {
                value: Instruction::from_node(node)?,
                line: at.line,
                end_line: at.end_line,
                original: original.to_string(),
            };
            self.apply(index, state, &instruction)?;
        }
        Ok(())
    }

    /// An image of the local store, fetched first when the store lacks it (or always, once,
    /// with `--pull`): its layers, manifest digest and config.
    fn image(&self, name: &str) -> Result<(Vec<Layer>, Digest, ImageConfig), String> {
        let (name, fetcher) = match self.options.named_contexts.get(name) {
            Some(NamedContext::Image(reference)) => {
                (reference.as_str(), self.options.image_fetcher.as_deref())
            }
            Some(NamedContext::StoredImage(digest)) => (digest.as_str(), None),
            Some(NamedContext::Directory(_)) | None => {
                (name, self.options.image_fetcher.as_deref())
            }
        };
        let stored = self.store.resolve(name);
        let record = match (stored, fetcher) {
            (Ok(record), Some(_)) if !self.options.pull => record,
            (Ok(record), None) => record,
            (_, Some(fetcher)) => {
                self.fetch_once(fetcher, name)?;
                self.store.resolve(name).map_err(|e| e.to_string())?
            }
            (Err(e), None) => {
                return Err(format!(
                    "{e} (this build uses local images only: load or pull {name} first)"
                ))
            }
        };
        let (manifest, config, _) = self
            .store
            .image_config(&record)
            .map_err(|e| e.to_string())?;
        if manifest.layers.len() != config.rootfs.diff_ids.len() {
            return Err(format!(
                "image {name} has {} layers but {} diff IDs",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ));
        }
        let layers = manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(d, id)| Layer {
                descriptor: d.clone(),
                diff_id: id.clone(),
            })
            .collect();
        let digest = self
            .store
            .manifest_for_host(&record.descriptor)
            .map_err(|e| e.to_string())?
            .0
            .digest;
        Ok((layers, digest, config))
    }

    /// Fetches `name` unless this build already has; parallel stages naming it wait for the
    /// one fetch.
    fn fetch_once(&self, fetcher: &dyn ImageFetcher, name: &str) -> Result<(), String> {
        let once = self
            .fetched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone();
        once.get_or_init(|| {
            let step = self.progress.internal_step(&format!("pull {name}"));
            let fetched = fetcher.fetch(self.store, name, &self.options.platform);
            step.finish(match fetched {
                Ok(()) => StepStatus::Done,
                Err(_) => StepStatus::Failed,
            });
            fetched
        })
        .clone()
    }

    /// The layers and manifest digest of an image, for `COPY --from=IMAGE`.
    pub fn image_layers(&self, name: &str) -> Result<(Vec<Layer>, Digest), String> {
        self.image(name).map(|(layers, digest, _)| (layers, digest))
    }

    /// Applies one instruction to `state`.
    fn apply(
        &self,
        index: usize,
        state: &mut StageState,
        at: &Located<Instruction>,
    ) -> Result<(), BuildError> {
        match &at.value {
            Instruction::Arg(defs) => {
                self.declare_args(state, defs, at)?;
                self.history(state, at, None, true);
                Ok(())
            }
            // A RUN's command line is the shell's to expand, not the Dockerfile's.
            Instruction::Run(_) if self.checking => Ok(()),
            Instruction::Copy(_) | Instruction::Add(_) if self.checking => {
                super::copy::expand_words(self, state, at).map(drop)
            }
            Instruction::Run(run) => {
                let plan = super::run::plan(self, state, run, at)?;
                for id in plan.cache_mount_ids() {
                    self.remote_cache.note_cache_mount(&id);
                }
                let key = super::run::cache_key(self, state, &plan, at)?;
                let output = self.fs_step(index, state, at, key, |step| {
                    super::run::execute(self, state, &plan, at, step, self.in_image(index))
                })?;
                self.push(state, at, output);
                Ok(())
            }
            Instruction::Copy(_) | Instruction::Add(_) => {
                let plan = super::copy::plan(self, index, state, at)?;
                let key = super::copy::cache_key(self, state, &plan, at)?;
                let output = self.fs_step(index, state, at, key, |_| {
                    super::copy::execute(self, state, &plan, at, self.in_image(index))
                })?;
                self.push(state, at, output);
                Ok(())
            }
            Instruction::Workdir(_) => {
                self.apply_config(state, at)?;
                if self.checking {
                    return Ok(());
                }
                let key = super::copy::workdir_key(state);
                let output = self.fs_step(index, state, at, key, |_| {
                    super::copy::workdir(self, state, self.in_image(index))
                })?;
                self.push(state, at, output);
                Ok(())
            }
            Instruction::From(_) => Err(step_error(at, "FROM inside a stage")),
            // Recorded in the config only: BuildKit writes no history entry for ONBUILD.
            Instruction::Onbuild(_) => self.apply_config(state, at),
            _ => {
                self.apply_config(state, at)?;
                self.history(state, at, None, true);
                Ok(())
            }
        }
    }

    /// Applies a config instruction (WORKDIR's config part too) and notes its unset variables.
    fn apply_config(
        &self,
        state: &mut StageState,
        at: &Located<Instruction>,
    ) -> Result<(), BuildError> {
        let args = state.args.clone();
        // ENTRYPOINT drops the base image's CMD only, not one this stage set.
        let kept_cmd = match &at.value {
            Instruction::Entrypoint(_) if state.cmd_set => {
                state.config.config.as_ref().and_then(|c| c.cmd.clone())
            }
            _ => None,
        };
        let unset = image_config::apply(&mut state.config, &at.value, &self.lex, &args)
            .map_err(|e| step_error(at, e))?;
        if kept_cmd.is_some() {
            state.config.config_mut().cmd = kept_cmd;
        }
        if matches!(at.value, Instruction::Cmd(_)) {
            state.cmd_set = true;
        }
        self.note_unset(state, at, &unset);
        Ok(())
    }

    fn declare_args(
        &self,
        state: &mut StageState,
        defs: &[ArgDef],
        at: &Located<Instruction>,
    ) -> Result<(), BuildError> {
        // Defaults are expanded in the scope from before the instruction, as BuildKit does:
        // in `ARG A=1 B=$A`, B does not see this A.
        let mut values = Vec::with_capacity(defs.len());
        for def in defs {
            let value = match self.options.build_args.get(&def.name) {
                Some(v) => Some(v.clone()),
                None => match &def.default {
                    Some(d) => {
                        let scope = Scope::new(&state.config, &state.args);
                        let expansion =
                            self.lex.expand(d, &scope).map_err(|e| step_error(at, e))?;
                        self.note_unset(state, at, &expansion.unset);
                        Some(expansion.word)
                    }
                    None => self.global_args.get(&def.name).cloned(),
                },
            };
            values.push(value);
        }
        for (def, value) in defs.iter().zip(values) {
            state.declared_args.insert(def.name.clone());
            match value {
                Some(v) => state.args.insert(def.name.clone(), v),
                None => state.args.remove(&def.name),
            };
        }
        Ok(())
    }

    /// Runs a filesystem step whose cache key is `key`, unless the key hits the cache.
    fn fs_step(
        &self,
        index: usize,
        state: &StageState,
        at: &Located<Instruction>,
        key: Digest,
        run: impl FnOnce(&Step) -> Result<Option<Layer>, BuildError>,
    ) -> Result<StepOutput, BuildError> {
        let step = self.progress.step(index, at.original.trim());
        if !self.no_cache_for(index) {
            if let Some(record) = self.remote_cache.get(self.store, &key)? {
                step.finish(StepStatus::Cached);
                return Ok(StepOutput {
                    key,
                    layer: record.layer.map(|l| Layer {
                        descriptor: l.descriptor,
                        diff_id: l.diff_id,
                    }),
                    created: record.created,
                });
            }
        }
        let layer = match self
            .fetch_step_inputs(index, state, at)
            .and_then(|()| run(&step))
        {
            Ok(layer) => layer,
            Err(e) => {
                step.finish(StepStatus::Failed);
                return Err(e);
            }
        };
        let created = self.now();
        self.store.cache_put(
            &key,
            &CacheRecord {
                layer: layer.as_ref().map(|l| CachedLayer {
                    descriptor: l.descriptor.clone(),
                    diff_id: l.diff_id.clone(),
                }),
                created: created.clone(),
            },
        )?;
        step.finish(StepStatus::Done);
        Ok(StepOutput {
            key,
            layer,
            created,
        })
    }

    fn no_cache_for(&self, index: usize) -> bool {
        self.options.no_cache
            || self.dockerfile.stages[index]
                .name
                .as_ref()
                .is_some_and(|n| {
                    self.options
                        .no_cache_filter
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case(n))
                })
    }

    fn push(&self, state: &mut StageState, at: &Located<Instruction>, output: StepOutput) {
        let layer = output.layer.as_ref();
        self.remote_cache
            .record(&state.fs_key, &output.key, layer, &output.created);
        state.fs_key = output.key;
        let empty = output.layer.is_none();
        if let Some(layer) = output.layer {
            state.config.rootfs.diff_ids.push(layer.diff_id.clone());
            state.layers.push(layer);
        }
        self.history(state, at, Some(output.created), empty);
    }

    fn history(
        &self,
        state: &mut StageState,
        at: &Located<Instruction>,
        created: Option<String>,
        empty_layer: bool,
    ) {
        // Entries without a time (instructions that only change the config) get one at export
        // (`export::fill_history_times`), from the layers around them, as BuildKit's do.
        state.config.history.push(History {
            created,
            created_by: Some(format!("{} # buildkit", at.original.trim())),
            comment: Some("buildkit.dockerfile.v0".to_string()),
            empty_layer,
            ..History::default()
        });
    }

    /// The time to record: SOURCE_DATE_EPOCH when set, else now (to the nanosecond, as
    /// BuildKit's: two steps a second apart still tell which came first).
    pub fn now(&self) -> String {
        match self.options.source_date_epoch {
            Some(epoch) => oci::timestamp::format_rfc3339(epoch),
            None => oci::timestamp::format_rfc3339_nanos(std::time::SystemTime::now()),
        }
    }
}

/// `--mount from=` sources of a RUN (literal ones only: a stage name with `$` is resolved at
/// run time and must then name an already-solved stage).
pub(super) fn run_mount_sources(run: &Run) -> Vec<String> {
    use crate::dockerfile::instructions::Expandable;
    run.mounts
        .iter()
        .filter_map(|m| match m {
            Expandable::Literal(m) => m.from.clone(),
            Expandable::Template(_) => None,
        })
        .collect()
}

fn platform_args(options: &BuildOptions) -> BTreeMap<String, String> {
    let p = &options.platform;
    let host = oci::Platform::host();
    let mut args = BTreeMap::new();
    for (prefix, platform) in [("TARGET", p), ("BUILD", &host)] {
        args.insert(format!("{prefix}PLATFORM"), platform.to_string());
        args.insert(format!("{prefix}OS"), platform.os.clone());
        args.insert(format!("{prefix}ARCH"), platform.architecture.clone());
        args.insert(
            format!("{prefix}VARIANT"),
            platform.variant.clone().unwrap_or_default(),
        );
    }
    debug_assert!(crate::dockerfile::PLATFORM_ARGS
        .iter()
        .all(|a| args.contains_key(*a)));
    args
}

/// A step error located at an instruction: `Dockerfile:LINE: INSTRUCTION: message`.
pub(crate) fn step_error<T>(at: &Located<T>, message: impl std::fmt::Display) -> BuildError {
    BuildError::Step {
        location: format!("Dockerfile:{}", at.line),
        instruction: at.original.trim().lines().next().unwrap_or("").to_string(),
        message: message.to_string(),
    }
}
