//! The text line of an event: aligned columns, the action coloured on a terminal.
use std::io::{self, Write};

use anstyle::{AnsiColor, Style};
use enforcer_common::Action;

use super::{
    Rendered,
    describe::{comm, detail},
};
use crate::{kubernetes::names::PodRef, workload::Workload};

/// Column widths, but the last (DETAIL), which takes the rest of the line. The container column
/// fits `containerd:<12 hex> pod:<8 hex>`.
const WIDTHS: [usize; 7] = [24, 36, 7, 15, 8, 6, 10];
/// The column of the cgroup path or the workload in it.
const CONTAINER: usize = 1;
/// The column of the action, the one coloured.
const ACTION: usize = 5;

pub const HEADER: [&str; 8] = [
    "TIME",
    "CONTAINER",
    "PID",
    "COMM",
    "OP",
    "ACTION",
    "LAYER",
    "DETAIL",
];

impl Rendered {
    /// The columns of a tail line, before alignment and colour.
    pub fn columns(&self) -> [String; 8] {
        let record = &self.record;
        [
            humantime::format_rfc3339_millis(self.time).to_string(),
            match &self.kubernetes {
                Some(names) => cut_end(kubernetes_label(names), WIDTHS[CONTAINER]),
                None => {
                    container_column(&self.cgroup_path, self.workload.as_ref(), WIDTHS[CONTAINER])
                }
            },
            record.raw.pid.to_string(),
            comm(&record.raw),
            record.op_name().to_owned(),
            record.action.name().to_uppercase(),
            record.refused_by_name().to_owned(),
            detail(record),
        ]
    }
}

/// Writes one aligned line; `action_style` colours the action column.
pub fn line(
    out: &mut impl Write,
    columns: &[String; 8],
    action_style: Option<Style>,
) -> io::Result<()> {
    for (i, column) in columns.iter().enumerate() {
        match WIDTHS.get(i) {
            Some(&width) if i == ACTION => match action_style {
                Some(style) => write!(out, "{style}{column:<width$}{style:#} ")?,
                None => write!(out, "{column:<width$} ")?,
            },
            Some(&width) => write!(out, "{column:<width$} ")?,
            None => write!(out, "{column}")?,
        }
    }
    writeln!(out)
}

pub fn style(action: Action) -> Style {
    let colour = match action {
        Action::Deny => AnsiColor::Red,
        Action::Kill => AnsiColor::Magenta,
        Action::Audit => AnsiColor::Yellow,
        Action::Allow => AnsiColor::Green,
    };
    Style::new().fg_color(Some(colour.into())).bold()
}

/// `namespace/pod/container` (or `namespace/pod` for the pod's own cgroup).
fn kubernetes_label(names: &PodRef) -> String {
    match &names.container {
        Some(container) => format!("{}/{}/{container}", names.namespace, names.pod),
        None => format!("{}/{}", names.namespace, names.pod),
    }
}

/// `label`, cut to `width` characters with an ellipsis at its end.
fn cut_end(label: String, width: usize) -> String {
    if label.chars().count() <= width {
        label
    } else {
        let kept: String = label.chars().take(width.saturating_sub(1)).collect();
        format!("{kept}…")
    }
}

/// The container column: the workload's label when the path names a container or a pod (their
/// paths never fit), else the cgroup path; either is cut to `width` characters with an ellipsis,
/// a label at its end, a path at its start (so the deepest cgroup, usually a systemd unit, stays).
fn container_column(path: &str, workload: Option<&Workload>, width: usize) -> String {
    match workload {
        Some(workload) if workload.container.is_some() || workload.pod_uid.is_some() => {
            cut_end(workload.label(), width)
        }
        _ => {
            let length = path.chars().count();
            if length <= width {
                path.to_owned()
            } else {
                let kept: String = path.chars().skip(length + 1 - width).collect();
                format!("…{kept}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CONTAINER, WIDTHS, container_column};
    use crate::workload::workload;

    const ID: &str = "3f2a9c1b4d5e6f708192a3b4c5d6e7f80912a3b4c5d6e7f8091a2b3c4d5e6f70";
    const POD: &str = "/kubepods.slice/kubepods-besteffort.slice/\
                       kubepods-besteffort-pod1234abcd_5678_4ef0_9abc_def012345678.slice";

    fn column(path: &str) -> String {
        container_column(path, workload(path).as_ref(), WIDTHS[CONTAINER])
    }

    #[test]
    fn container_column_names_containers_and_pods() {
        let path = format!("{POD}/cri-containerd-{ID}.scope");
        assert_eq!(column(&path), "containerd:3f2a9c1b4d5e pod:1234abcd");
        assert_eq!(column(POD), "pod:1234abcd");
        assert_eq!(
            column(&format!("/system.slice/docker-{ID}.scope")),
            "docker:3f2a9c1b4d5e"
        );
    }

    #[test]
    fn container_column_keeps_the_end_of_long_paths() {
        assert_eq!(column("/demo"), "/demo");
        assert_eq!(
            column("/system.slice/nginx.service"),
            "/system.slice/nginx.service"
        );
        let long = "/user.slice/user-1000.slice/user@1000.service/app.slice/app-editor.scope";
        let shown = column(long);
        assert_eq!(shown.chars().count(), WIDTHS[CONTAINER]);
        assert_eq!(shown, "….service/app.slice/app-editor.scope");
        let unknown = "/a-very-long-cgroup-name/that-follows-no-runtime/naming-at-all";
        assert_eq!(column(unknown), "…at-follows-no-runtime/naming-at-all");
    }

    #[test]
    fn container_column_cuts_long_labels_at_the_end() {
        let path = format!("/system.slice/docker-{ID}.scope/system.slice/containerd.service");
        let shown = column(&path);
        assert_eq!(shown.chars().count(), WIDTHS[CONTAINER]);
        assert_eq!(shown, "docker:3f2a9c1b4d5e containerd.serv…");
    }
}
