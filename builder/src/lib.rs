//! rbuild's builder: the Dockerfile frontend ([`dockerfile`]: parser, shell-word lexer, typed
//! instructions), the build context ([`context`]), and the solver ([`build`]: stages, cache
//! keys, snapshots, RUN through runtime-exec, exporters, progress).

pub mod build;
pub mod context;
pub mod dockerfile;
pub mod image_config;
