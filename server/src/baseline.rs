//! `ferroserve baseline`: the training data's reference statistics, kept
//! with a registered version. The inputs' statistics come from the data's
//! columns; the outputs' from running the version itself over the data
//! (in-process, through the same batcher as serving), so that prediction
//! drift has a reference too.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use ferroserve_backend_core::DataType;
use ferroserve_batch::tensors::{row_problem, tensor_of, Resolved, Strictness};
use ferroserve_monitoring::drift::baseline::{
    Baseline, DataFile, Feature, FeatureStats, Source, Values,
};
use ferroserve_monitoring::drift::data::{read_table, Table};
use ferroserve_monitoring::drift::mapping::{
    input_features, map_inputs, output_feature_names, Mapped,
};
use ferroserve_monitoring::drift::window::number_at;
use ferroserve_registry::baselines::{self, NewBaseline};
use ferroserve_registry::models::{parse_ref, VersionRef};
use ferroserve_registry::register::user_or_default;
use ferroserve_runtime::manifest::Manifest;
use ferroserve_runtime::Model;

use crate::output::{print_json, print_table};
use crate::python::PythonArgs;

#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// The training data: a Parquet or CSV file (with a header row).
    #[arg(long)]
    data: PathBuf,
    /// Model repository folder (holding registry.db).
    #[arg(long)]
    repo: PathBuf,
    /// The version: NAME (the newest), NAME:VERSION or NAME@ALIAS.
    #[arg(long, value_name = "NAME[:VERSION|@ALIAS]", value_parser = parse_ref)]
    model: VersionRef,
    /// Skip running the model over the data (no output statistics, so no
    /// prediction drift).
    #[arg(long)]
    no_outputs: bool,
    /// Who records it (default: $USER, else $LOGNAME, else "unknown").
    #[arg(long)]
    user: Option<String>,
    /// Print the stored baseline as JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    python: PythonArgs,
}

pub fn run(a: BaselineArgs) -> Result<()> {
    let model_name = a.model.model().to_string();
    let version = baselines::resolve_version(&a.repo, &a.model)?;
    let dir = a.repo.join(&model_name).join(version.to_string());
    let manifest = Manifest::load(&dir)?;
    let table = read_table(&a.data)?;
    if table.rows == 0 {
        bail!("{}: the data has no rows", a.data.display());
    }
    let model = crate::in_process::load(
        manifest,
        version,
        &format!("{model_name}:{version}"),
        &a.python,
    )?;
    let m = &model.manifest;
    let batched = m.batching.max_batch_size > 0;
    if model.signature.inputs.is_empty() {
        bail!("model {model_name}:{version} declares no inputs (a raw-style entry script takes the request body as is), so its data has no features to compare");
    }
    let names: HashMap<String, Vec<String>> = m
        .feature_names
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mapped =
        map_inputs(&table, &model.signature.inputs, batched, &names).with_context(|| {
            format!(
                "{}: the columns do not match the model's inputs",
                a.data.display()
            )
        })?;
    let features: Vec<Feature> = input_features(&table, &mapped)
        .map(|(name, source, values)| Feature::compute(name, source, values))
        .collect();
    let outputs = if a.no_outputs {
        Vec::new()
    } else {
        output_features(&model, &table, &mapped, batched, &names)?
    };
    let baseline = Baseline {
        data: DataFile {
            name: a.data.file_name().map_or_else(
                || a.data.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            rows: table.rows as u64,
            sha256: ferroserve_registry::hashing::sha256_file(&a.data)
                .map(|(hex, _)| hex)
                .with_context(|| format!("cannot read {}", a.data.display()))?,
        },
        created_at: ferroserve_registry::now_rfc3339(),
        features,
        outputs,
    };
    let stats = serde_json::to_string(&baseline)?;
    let stored = baselines::record(
        &a.repo,
        &model_name,
        version,
        &NewBaseline {
            data_name: &baseline.data.name,
            data_rows: baseline.data.rows,
            data_sha256: &baseline.data.sha256,
            stats: &stats,
            actor: &user_or_default(a.user),
        },
    )?;
    if a.json {
        return print_json(&serde_json::json!({
            "model": model_name,
            "version": version,
            "recorded_at": stored.recorded_at,
            "recorded_by": stored.recorded_by,
            "baseline": baseline,
        }));
    }
    println!(
        "baseline of {model_name}:{version} recorded: {} ({} rows, sha256 {})",
        baseline.data.name,
        baseline.data.rows,
        &baseline.data.sha256[..12]
    );
    let rows: Vec<Vec<String>> = baseline
        .features
        .iter()
        .map(|f| ("input", f))
        .chain(baseline.outputs.iter().map(|f| ("output", f)))
        .map(|(side, f)| {
            let summary = match &f.stats {
                FeatureStats::Numeric(s) => format!(
                    "mean {:.4} std {:.4} min {:.4} max {:.4}, {} bins",
                    s.mean,
                    s.std,
                    s.min,
                    s.max,
                    s.counts.len()
                ),
                FeatureStats::Categorical(c) => format!("{} categories", c.values.len()),
            };
            let kind = if f.is_numeric() {
                "numeric"
            } else {
                "categorical"
            };
            vec![
                side.to_string(),
                f.name.clone(),
                kind.to_string(),
                format!("{:.4}", f.nulls as f64 / f.rows.max(1) as f64),
                summary,
            ]
        })
        .collect();
    print_table(
        &["side", "feature", "kind", "null rate", "statistics"],
        &rows,
    );
    Ok(())
}

/// Runs the model over the data, a full batch at a time, and computes its
/// tabular outputs' statistics.
fn output_features(
    model: &Model,
    table: &Table,
    mapped: &[Mapped],
    batched: bool,
    names: &HashMap<String, Vec<String>>,
) -> Result<Vec<Feature>> {
    let outputs: Vec<(usize, Vec<String>)> = model
        .signature
        .outputs
        .iter()
        .enumerate()
        .map(|(i, spec)| (i, output_feature_names(spec, batched, names)))
        .filter(|(_, n)| !n.is_empty())
        .collect();
    if outputs.is_empty() {
        return Ok(Vec::new());
    }
    let chunk = if batched {
        model.manifest.batching.max_batch_size.max(1)
    } else {
        1
    };
    let mut values: Vec<Vec<Values>> = outputs
        .iter()
        .map(|(i, n)| {
            let dtype = model.signature.outputs[*i].dtype;
            n.iter()
                .map(|_| match dtype {
                    DataType::Bytes => Values::Text(Vec::new()),
                    _ => Values::Numeric(Vec::new()),
                })
                .collect()
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut start = 0;
    while start < table.rows {
        let end = (start + chunk).min(table.rows);
        let rows: Vec<usize> = (start..end).collect();
        let named = mapped
            .iter()
            .map(|m| {
                let strict = Strictness { allow_nan: true };
                let cols = Resolved::new(m, table);
                if let Some(why) = rows
                    .iter()
                    .find_map(|&r| row_problem(m, &cols, r, batched, strict).map(|p| (r, p)))
                {
                    bail!("row {}: {}", why.0, why.1);
                }
                Ok((m.spec.name.clone(), tensor_of(m, &cols, &rows, batched)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let out = rt
            .block_on(model.infer_uncounted(named, Some(Duration::from_secs(60))))
            .map_err(|e| anyhow!("the model failed on rows {start}..{end} of the data: {e}"))?;
        for ((i, feature_names), vals) in outputs.iter().zip(&mut values) {
            let t = &out.outputs[*i];
            let n = if batched { t.rows() } else { 1 };
            let width = t.element_count() / n.max(1);
            let texts = (t.dtype == DataType::Bytes).then(|| t.string_elements());
            for r in 0..n {
                for (j, v) in (0..feature_names.len()).zip(vals.iter_mut()) {
                    match v {
                        Values::Numeric(v) => v.push(number_at(t, r * width + j)),
                        Values::Text(v) => v.push(
                            texts
                                .as_ref()
                                .and_then(|x| x.get(r * width + j))
                                .map(|b| String::from_utf8_lossy(b).into_owned()),
                        ),
                    }
                }
            }
        }
        start = end;
    }
    Ok(outputs
        .iter()
        .zip(values)
        .flat_map(|((i, feature_names), vals)| {
            let tensor = model.signature.outputs[*i].name.clone();
            feature_names
                .iter()
                .zip(vals)
                .enumerate()
                .map(move |(j, (name, v))| {
                    Feature::compute(
                        name.clone(),
                        Source {
                            tensor: tensor.clone(),
                            column: j,
                        },
                        &v,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect())
}
