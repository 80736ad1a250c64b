//! From a model's raw outputs to a [`ModelPrediction`] (docs/models.md, "Heads";
//! docs/training.md, `return_scale`), so the engine can feed the consensus
//! directly.
//!
//! * `direction_logits` are raw logits over `[DOWN, NEUTRAL, UP]`: the
//!   probabilities are their softmax, computed in f64 after subtracting the
//!   largest logit.
//! * `direction` is the argmax of those probabilities; a tie at the top
//!   resolves to NEUTRAL, as in the consensus (our choice, docs/consensus.md).
//! * `confidence` is already through the sigmoid and is passed on as is.
//! * the `expected_return` head predicts `bps / return_scale`; the prediction
//!   carries a plain fraction, `head · return_scale / 10_000`.

use super::error::{check_model, check_value, finite_rule, unit_rule, Rule};
use super::types::{Direction, ModelPrediction, ModelType};
use super::EnsembleError;

/// The default `return_scale` of a weights file without one (docs/models.md).
pub const DEFAULT_RETURN_SCALE: f64 = 10.0;

/// One sample's raw head outputs, as the models produce them (f32).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawModelOutput {
    pub direction_logits: [f32; 3],
    /// Already through the sigmoid.
    pub confidence: f32,
    /// The raw head value, `bps / return_scale`.
    pub expected_return: f32,
}

/// Turns [`RawModelOutput`]s into [`ModelPrediction`]s for one model's
/// `return_scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PredictionAdapter {
    return_scale: f64,
}

impl Default for PredictionAdapter {
    fn default() -> Self {
        PredictionAdapter { return_scale: DEFAULT_RETURN_SCALE }
    }
}

const LOGIT_FIELDS: [&str; 3] = ["direction_logits[0]", "direction_logits[1]", "direction_logits[2]"];

impl PredictionAdapter {
    /// `return_scale` must be finite and > 0.
    pub fn new(return_scale: f64) -> Result<Self, EnsembleError> {
        check_value("return_scale", return_scale, finite_rule(return_scale))?;
        if return_scale <= 0.0 {
            return Err(EnsembleError::Value { field: "return_scale", value: return_scale, rule: Rule::NotPositive });
        }
        Ok(PredictionAdapter { return_scale })
    }

    pub fn return_scale(&self) -> f64 {
        self.return_scale
    }

    /// The prediction of `model` from `raw`, stamped `timestamp` (Unix
    /// seconds). Non-finite outputs, or a confidence outside [0, 1], are
    /// errors naming the model and the output.
    pub fn to_prediction(
        &self,
        model: ModelType,
        raw: &RawModelOutput,
        timestamp: f64,
    ) -> Result<ModelPrediction, EnsembleError> {
        let logits = raw.direction_logits.map(f64::from);
        for (k, &l) in logits.iter().enumerate() {
            check_model(model, LOGIT_FIELDS[k], l, finite_rule(l))?;
        }
        let confidence = f64::from(raw.confidence);
        check_model(model, "confidence", confidence, unit_rule(confidence))?;
        let head = f64::from(raw.expected_return);
        check_model(model, "expected_return", head, finite_rule(head))?;
        check_model(model, "timestamp", timestamp, finite_rule(timestamp))?;

        let max = logits[0].max(logits[1]).max(logits[2]);
        let e = logits.map(|l| (l - max).exp());
        let sum = e[0] + e[1] + e[2];
        let probabilities = e.map(|x| x / sum);
        let [down, neutral, up] = probabilities;
        let direction = if up > down && up > neutral {
            Direction::Up
        } else if down > up && down > neutral {
            Direction::Down
        } else {
            Direction::Neutral
        };
        // A finite head times a large (finite) return_scale can overflow.
        let expected_return = head * self.return_scale / 10_000.0;
        check_model(model, "expected_return", expected_return, finite_rule(expected_return))?;
        Ok(ModelPrediction { model_type: model, direction, confidence, probabilities, expected_return, timestamp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_that_overflows_with_its_return_scale_is_an_error() {
        let adapter = PredictionAdapter::new(1e308).unwrap();
        let raw = RawModelOutput { direction_logits: [0.0; 3], confidence: 0.5, expected_return: 1e30 };
        let err = adapter.to_prediction(ModelType::Tlob, &raw, 0.0).unwrap_err();
        assert_eq!((err.model(), err.field()), (Some(ModelType::Tlob), Some("expected_return")), "{err}");
        let ok = RawModelOutput { expected_return: 1e-30, ..raw };
        assert!(adapter.to_prediction(ModelType::Tlob, &ok, 0.0).unwrap().expected_return.is_finite());
    }
}
