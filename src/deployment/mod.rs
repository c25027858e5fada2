//! The user's `az ml` deployment YAML, read as `az ml` reads it: [`translate`] turns it into the
//! ARM deployment body and [`assets`] plans what it registers first (local code folders hashed as
//! az ml hashes them, inline environments, `@latest` labels, data collectors). Pure apart from
//! reading the files the YAML names (inside the config's folder): `config` validates rules with
//! it, and the rollout registers what it planned.

pub mod assets;
pub mod batch;
pub mod translate;
