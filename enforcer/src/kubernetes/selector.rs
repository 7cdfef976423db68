//! Label selectors as the apiserver evaluates them (`matchLabels` and `matchExpressions`), for
//! the agent's own matching of policies to the pods and namespaces it watches: the API cannot
//! be asked which policies select a pod.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `selector` picks an object carrying `labels`. An empty selector picks everything;
/// an expression with an unknown operator, or `In`/`NotIn` without values, is an error (the
/// policy then picks nothing and its status says why).
pub fn matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let mut picked = true;
    for (key, value) in selector.match_labels.iter().flatten() {
        picked &= labels.get(key) == Some(value);
    }
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.as_deref().unwrap_or_default();
        let present = labels.get(&expression.key);
        let this = match expression.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(format!(
                    "selector on {:?}: {} needs values",
                    expression.key, expression.operator
                ));
            }
            "In" => present.is_some_and(|value| values.contains(value)),
            "NotIn" => !present.is_some_and(|value| values.contains(value)),
            "Exists" => present.is_some(),
            "DoesNotExist" => present.is_none(),
            other => {
                return Err(format!(
                    "selector on {:?}: unknown operator {other:?}",
                    expression.key
                ));
            }
        };
        picked &= this;
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let empty = LabelSelector::default();
        assert_eq!(matches(&empty, &web), Ok(true));
        let by_label = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            ..Default::default()
        };
        assert_eq!(matches(&by_label, &web), Ok(true));
        assert_eq!(matches(&by_label, &labels(&[("app", "db")])), Ok(false));
        let cases = [
            (expression("tier", "In", &["front", "x"]), true),
            (expression("tier", "NotIn", &["front"]), false),
            (expression("gone", "NotIn", &["front"]), true),
            (expression("app", "Exists", &[]), true),
            (expression("app", "DoesNotExist", &[]), false),
        ];
        for (requirement, want) in cases {
            let selector = LabelSelector {
                match_expressions: Some(vec![requirement.clone()]),
                ..by_label.clone()
            };
            assert_eq!(matches(&selector, &web), Ok(want), "{requirement:?}");
        }
    }

    #[test]
    fn a_malformed_expression_is_an_error() {
        for requirement in [expression("a", "In", &[]), expression("a", "Near", &["b"])] {
            let selector = LabelSelector {
                match_expressions: Some(vec![requirement]),
                ..Default::default()
            };
            assert!(matches(&selector, &BTreeMap::new()).is_err());
        }
    }
}
