//! Why a run or a release failed, as `…/diagnosis` answers and as a diagnosis is kept: the
//! engine's diagnosis (category, sentence, fix, evidence) and what changed since the last good
//! run, beside the run or release it explains.

use super::{Release, Run};
use gantry_engine::why::Diagnosis;
use gantry_engine::why::changes::Changes;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `GET /api/runs/{id}/diagnosis` (and `diagnosis` of a failed run's detail).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunDiagnosis {
    pub run: Run,
    pub diagnosis: Diagnosis,
    pub changes: Changes,
}

/// `GET /api/projects/{project}/environments/{environment}/diagnosis`: the latest failed
/// release, compared with the healthy one before it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseDiagnosis {
    pub release: Release,
    /// The healthy release before it (what it was compared with).
    pub compared_to: Option<Release>,
    pub diagnosis: Diagnosis,
    pub changes: Changes,
}
