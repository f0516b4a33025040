//! The prompt builder: the 14 CheXpert labels (Irvin et al. 2019) as choices, composed
//! into short MIMIC-style impressions ("Small right pleural effusion. Cardiomegaly."),
//! and RoentGen v2's demographic prompt form ("{age} year old {race} {sex}.
//! {impression}"). The sentences are ours, written for this builder.
//!
//! Which form a model is prompted in is its family's ([`Style::of`]): RoentGen v1 and
//! RadEdit take the findings alone (RadEdit was trained on MIMIC-CXR's impression
//! sections and on CheXpert's and ChestX-ray14's lists of observations, per its model
//! card: short findings sentences, no patient template), RoentGen v2 the demographics
//! first. The families' recipes live in `crate::generation` (`Family`, `Recipe`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Left,
    Right,
    Bilateral,
}

/// How large a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    Small,
    Moderate,
    Large,
}

/// One CheXpert label: its id (`snake_case`), its name, whether a side and a size make
/// sense for it.
#[derive(Clone, Copy, Debug)]
pub struct Label {
    pub id: &'static str,
    pub name: &'static str,
    pub sided: bool,
    pub sized: bool,
}

const fn label(id: &'static str, name: &'static str, sided: bool, sized: bool) -> Label {
    Label {
        id,
        name,
        sided,
        sized,
    }
}

/// The 14 CheXpert labels, in CheXpert's order.
pub const LABELS: [Label; 14] = [
    label("no_finding", "No Finding", false, false),
    label(
        "enlarged_cardiomediastinum",
        "Enlarged Cardiomediastinum",
        false,
        false,
    ),
    label("cardiomegaly", "Cardiomegaly", false, true),
    label("lung_opacity", "Lung Opacity", true, false),
    label("lung_lesion", "Lung Lesion", true, true),
    label("edema", "Edema", false, true),
    label("consolidation", "Consolidation", true, false),
    label("pneumonia", "Pneumonia", true, false),
    label("atelectasis", "Atelectasis", true, false),
    label("pneumothorax", "Pneumothorax", true, true),
    label("pleural_effusion", "Pleural Effusion", true, true),
    label("pleural_other", "Pleural Other", true, false),
    label("fracture", "Fracture", true, false),
    label("support_devices", "Support Devices", false, false),
];

/// A chosen finding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// A [`LABELS`] id.
    pub label: String,
    #[serde(default)]
    pub side: Option<Side>,
    #[serde(default)]
    pub size: Option<Size>,
}

/// How a family's prompts are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Short findings sentences, as a report's impression (RoentGen v1, RadEdit, and a
    /// model of no known family).
    Findings,
    /// RoentGen v2's "{age} year old {race} {sex}. {impression}".
    Demographics,
}

impl Style {
    pub fn of(family: Option<crate::generation::Family>) -> Style {
        use crate::generation::Family;
        match family {
            Some(Family::Sd2) => Style::Demographics,
            Some(Family::Sd1 | Family::RadEdit) | None => Style::Findings,
        }
    }
}

/// RoentGen v2's demographic fields (each optional).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Demographics {
    pub age: Option<u32>,
    /// e.g. "female", "male".
    pub sex: Option<String>,
    /// e.g. "White", "Black", "Asian", "Hispanic".
    pub race: Option<String>,
}

fn side_word(side: Option<Side>) -> &'static str {
    match side {
        Some(Side::Left) => "left ",
        Some(Side::Right) => "right ",
        Some(Side::Bilateral) => "bilateral ",
        None => "",
    }
}

fn size_word(size: Option<Size>, label: &str) -> &'static str {
    match (size, label) {
        // the heart is enlarged mildly, not "small"
        (Some(Size::Small), "cardiomegaly" | "edema") => "mild ",
        (Some(Size::Small), _) => "small ",
        (Some(Size::Moderate), _) => "moderate ",
        (Some(Size::Large), "cardiomegaly" | "edema") => "severe ",
        (Some(Size::Large), _) => "large ",
        (None, _) => "",
    }
}

/// One finding's sentence (capitalised, with its full stop).
fn sentence(f: &Finding) -> Result<String> {
    let l = LABELS.iter().find(|l| l.id == f.label).ok_or_else(|| {
        Error::Input(format!(
            "unknown finding `{}`; the findings are: {}",
            f.label,
            LABELS.map(|l| l.id).join(", ")
        ))
    })?;
    let side = if l.sided { f.side } else { None };
    let size = if l.sized { f.size } else { None };
    let (s, z) = (side_word(side), size_word(size, l.id));
    let text = match l.id {
        "no_finding" => "No acute cardiopulmonary process".to_string(),
        "enlarged_cardiomediastinum" => "Enlarged cardiomediastinal silhouette".to_string(),
        "cardiomegaly" if z.is_empty() => "Cardiomegaly".to_string(),
        "cardiomegaly" => format!("{z}cardiomegaly"),
        "lung_opacity" => format!("{s}lung opacity"),
        "lung_lesion" if z.is_empty() => format!("{s}lung nodule"),
        "lung_lesion" if z == "large " => format!("{s}lung mass"),
        "lung_lesion" => format!("{z}{s}lung nodule"),
        "edema" => format!("{z}pulmonary edema"),
        "consolidation" => format!("{s}consolidation"),
        "pneumonia" => format!("{s}consolidation concerning for pneumonia"),
        "atelectasis" if s.is_empty() => "Bibasilar atelectasis".to_string(),
        "atelectasis" => format!("{s}basilar atelectasis"),
        "pneumothorax" => format!("{z}{s}pneumothorax"),
        "pleural_effusion" if s == "bilateral " => format!("{z}bilateral pleural effusions"),
        "pleural_effusion" => format!("{z}{s}pleural effusion"),
        "pleural_other" => format!("{s}pleural thickening"),
        "fracture" => format!("{s}rib fracture"),
        "support_devices" => "Support devices in place".to_string(),
        _ => unreachable!("every label has a sentence"),
    };
    let mut c = text.chars();
    let first = c.next().map(|f| f.to_uppercase().collect::<String>());
    Ok(format!("{}{}.", first.unwrap_or_default(), c.as_str()))
}

/// The impression: one sentence a finding, in the order given. "No Finding" with other
/// findings is refused (they contradict).
pub fn impression(findings: &[Finding]) -> Result<String> {
    if findings.len() > 1 && findings.iter().any(|f| f.label == "no_finding") {
        return Err(Error::Input(
            "“No Finding” cannot go with other findings: untick one of them".into(),
        ));
    }
    let parts: Vec<String> = findings.iter().map(sentence).collect::<Result<_>>()?;
    Ok(parts.join(" "))
}

/// A prompt: the impression, and for SD 2.x models (RoentGen v2) the demographics in
/// front of it, "{age} year old {race} {sex}. {impression}" (the fields left empty are
/// left out).
pub fn prompt(findings: &[Finding], demographics: Option<&Demographics>) -> Result<String> {
    let imp = impression(findings)?;
    let Some(d) = demographics else {
        return Ok(imp);
    };
    if let Some(age) = d.age
        && !(1..=120).contains(&age)
    {
        return Err(Error::Input(format!(
            "the age must be between 1 and 120 years, not {age}"
        )));
    }
    let clean = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let mut who: Vec<String> = Vec::new();
    if let Some(age) = d.age {
        who.push(format!("{age} year old"));
    }
    who.extend(clean(&d.race));
    who.extend(clean(&d.sex));
    if who.is_empty() {
        return Ok(imp);
    }
    if imp.is_empty() {
        return Ok(format!("{}.", who.join(" ")));
    }
    Ok(format!("{}. {imp}", who.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(label: &str, side: Option<Side>, size: Option<Size>) -> Finding {
        Finding {
            label: label.into(),
            side,
            size,
        }
    }

    #[test]
    fn impressions_read_as_reports() {
        let p = prompt(
            &[
                f("pleural_effusion", Some(Side::Right), Some(Size::Small)),
                f("cardiomegaly", None, None),
            ],
            None,
        )
        .unwrap();
        assert_eq!(p, "Small right pleural effusion. Cardiomegaly.");
        let p = impression(&[
            f("pneumothorax", Some(Side::Left), Some(Size::Large)),
            f(
                "pleural_effusion",
                Some(Side::Bilateral),
                Some(Size::Moderate),
            ),
            f("cardiomegaly", None, Some(Size::Small)),
            f("support_devices", Some(Side::Left), Some(Size::Large)),
        ])
        .unwrap();
        assert_eq!(
            p,
            "Large left pneumothorax. Moderate bilateral pleural effusions. Mild cardiomegaly. Support devices in place."
        );
        assert_eq!(
            impression(&[f("no_finding", None, None)]).unwrap(),
            "No acute cardiopulmonary process."
        );
        // every label composes
        for l in LABELS {
            let s = impression(&[f(l.id, Some(Side::Right), Some(Size::Large))]).unwrap();
            assert!(s.ends_with('.') && s.len() > 5, "{}: {s}", l.id);
        }
    }

    #[test]
    fn demographics_in_roentgen_v2_form() {
        let d = Demographics {
            age: Some(67),
            sex: Some("female".into()),
            race: Some("Asian".into()),
        };
        let p = prompt(&[f("edema", None, Some(Size::Moderate))], Some(&d)).unwrap();
        assert_eq!(p, "67 year old Asian female. Moderate pulmonary edema.");
        let d = Demographics {
            age: None,
            sex: Some(" male ".into()),
            race: Some("".into()),
        };
        assert_eq!(
            prompt(&[f("no_finding", None, None)], Some(&d)).unwrap(),
            "male. No acute cardiopulmonary process."
        );
        assert_eq!(
            prompt(
                &[f("fracture", Some(Side::Left), None)],
                Some(&Demographics::default())
            )
            .unwrap(),
            "Left rib fracture."
        );
    }

    #[test]
    fn each_family_gets_its_style() {
        use crate::generation::Family;
        assert_eq!(Style::of(Some(Family::Sd2)), Style::Demographics);
        for f in [Some(Family::Sd1), Some(Family::RadEdit), None] {
            assert_eq!(Style::of(f), Style::Findings, "{f:?}");
        }
    }

    #[test]
    fn contradictions_and_unknowns_refused() {
        let e = impression(&[f("no_finding", None, None), f("edema", None, None)]).unwrap_err();
        assert!(e.to_string().contains("No Finding"), "{e}");
        let e = impression(&[f("tumour", None, None)]).unwrap_err();
        assert!(e.to_string().contains("pleural_effusion"), "{e}");
        let d = Demographics {
            age: Some(0),
            ..Default::default()
        };
        assert!(prompt(&[], Some(&d)).is_err());
    }
}
