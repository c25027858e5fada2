use super::*;

fn at(minute: i64) -> OffsetDateTime {
    time::macros::datetime!(2026-12-01 10:00 UTC) + time::Duration::minutes(minute)
}

fn system(modified: Option<i64>, by: Option<&str>, creator: Option<&str>) -> SystemData {
    SystemData {
        created_by: creator.map(str::to_string),
        created_by_type: Some("User".into()),
        last_modified_at: modified.map(at),
        last_modified_by: by.map(str::to_string),
        last_modified_by_type: Some("User".into()),
    }
}

#[test]
fn a_tag_approves_only_when_set_after_the_request_and_by_someone_else_when_asked() {
    let requested = at(0);
    // (tag true, systemData, distinct, expected: None = not set, Some(Ok(by)), Some(Err(word)))
    type Case = (
        bool,
        SystemData,
        bool,
        Option<Result<&'static str, &'static str>>,
    );
    let cases: Vec<Case> = vec![
        (false, system(Some(5), Some("bo"), Some("ada")), false, None),
        (
            true,
            system(Some(5), Some("bo"), Some("ada")),
            false,
            Some(Ok("bo")),
        ),
        // Registered with the tag, or set for an earlier rollout.
        (
            true,
            system(Some(-60), Some("ada"), Some("ada")),
            false,
            Some(Err("already set")),
        ),
        (
            true,
            system(Some(0), Some("bo"), Some("ada")),
            false,
            Some(Err("already set")),
        ),
        (
            true,
            SystemData::default(),
            false,
            Some(Err("no systemData.lastModifiedAt")),
        ),
        (
            true,
            system(Some(5), Some("ADA"), Some("ada")),
            false,
            Some(Ok("ADA")),
        ),
        (
            true,
            system(Some(5), Some("ADA"), Some("ada")),
            true,
            Some(Err("who registered")),
        ),
        (
            true,
            system(Some(5), None, Some("ada")),
            true,
            Some(Err("no lastModifiedBy")),
        ),
        (
            true,
            system(Some(5), Some("bo"), None),
            true,
            Some(Err("no createdBy")),
        ),
        (
            true,
            system(Some(5), Some("bo"), Some("ada")),
            true,
            Some(Ok("bo")),
        ),
    ];
    for (tag, sys, distinct, expected) in cases {
        let got = judge_tag(tag, "go", &sys, requested, distinct);
        match (expected, &got) {
            (None, TagVerdict::NotSet) => {}
            (Some(Ok(by)), TagVerdict::Approves(who)) if who == by => {}
            (Some(Err(word)), TagVerdict::Refused(why)) if why.contains(word) => {
                assert!(why.contains("go=true"), "{why}");
            }
            (expected, got) => {
                panic!("{sys:?} distinct {distinct}: {got:?}, expected {expected:?}")
            }
        }
    }
}

#[test]
fn an_approve_under_distinct_approver_needs_an_azure_identity_other_than_the_registrar() {
    let decision = |via: &str, identities: &[&str], approved: bool| ApprovalDecision {
        approved,
        by: identities
            .first()
            .copied()
            .unwrap_or("ada (OS user)")
            .to_string(),
        at: at(1),
        via: Some(via.into()),
        identities: identities.iter().map(|s| s.to_string()).collect(),
        for_request: Some(at(0)),
    };
    assert!(
        judge_cli_approval(
            &decision("credential", &["bo@contoso.com", "oid-2"], true),
            Some("ada@contoso.com")
        )
        .is_ok()
    );
    let same = judge_cli_approval(
        &decision("credential", &["Ada@Contoso.com", "oid-1"], true),
        Some("ada@contoso.com"),
    );
    assert!(same.unwrap_err().contains("registered the version"));
    let os = judge_cli_approval(&decision("os_user", &[], true), Some("ada@contoso.com"));
    assert!(os.unwrap_err().contains("not an OS user"));
    assert!(judge_cli_approval(&decision("credential", &["bo"], true), None).is_err());
    // A rejection always stands.
    assert!(judge_cli_approval(&decision("os_user", &[], false), Some("ada")).is_ok());
}
