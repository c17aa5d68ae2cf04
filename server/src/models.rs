//! The table of served models, behind an `ArcSwap` so request threads read
//! it without locks and a reload can replace it in one store.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::infer::InferError;
use crate::model::Model;

#[derive(Default)]
pub struct ModelTable {
    inner: ArcSwap<HashMap<String, Arc<Model>>>,
}

impl ModelTable {
    pub fn new(models: Vec<Model>) -> ModelTable {
        let map = models
            .into_iter()
            .map(|m| (m.name.clone(), Arc::new(m)))
            .collect();
        ModelTable {
            inner: ArcSwap::from_pointee(map),
        }
    }

    /// Finds a model by name and, if the URL names one, version.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<Model>, InferError> {
        let map = self.inner.load();
        let Some(model) = map.get(name) else {
            let mut names: Vec<&str> = map.keys().map(String::as_str).collect();
            names.sort_unstable();
            return Err(InferError::NotFound(format!(
                "unknown model {name:?}; served models are {names:?}"
            )));
        };
        if let Some(v) = version {
            if !model.has_version(v) {
                return Err(InferError::NotFound(format!(
                    "model {name:?} has no version {v:?} loaded; the served version is {:?}",
                    model.version_label
                )));
            }
        }
        Ok(Arc::clone(model))
    }

    pub fn all(&self) -> Vec<Arc<Model>> {
        let mut v: Vec<Arc<Model>> = self.inner.load().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Drops the table's references: each model's threads exit once the
    /// last request holding it has finished.
    pub fn clear(&self) {
        self.inner.store(Arc::new(HashMap::new()));
    }
}
