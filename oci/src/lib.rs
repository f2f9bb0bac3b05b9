//! The OCI image core shared by every part of rbuild.
//!
//! Everything here is content-addressed: a blob is named by its digest, written once through
//! [`content::ContentStore`] (verified while it streams in) and never rewritten. JSON that came
//! from outside is kept as its exact bytes; the typed views in [`image`] keep unknown fields and
//! serialize deterministically when rbuild writes JSON of its own.

pub mod archive;
pub mod compression;
pub mod content;
pub mod descriptor;
pub mod digest;
pub mod image;
pub mod layer;
pub mod media_type;
pub mod reference;
pub mod registry_auth;
mod resumable_sha256;
pub mod timestamp;

pub use descriptor::{Descriptor, Platform};
pub use digest::{Algorithm, Digest, DigestError, Digester};
pub use reference::{Reference, ReferenceError};
