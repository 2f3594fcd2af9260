//! Project members and fleet operators over HTTP against a real PostgreSQL: admins add, list,
//! change and remove members (by name, e-mail address or id; an e-mail address nobody has yet
//! is a user to come), what each role may do, the last admin and the last operator.

use control_plane::auth::Role;
use reqwest::Method;
use serde_json::{Value, json};

use super::projects::{project, serve_resources, user_with_token};

fn names(list: &Value) -> Vec<(String, String)> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_owned(), m["role"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn admins_manage_members_and_a_project_always_keeps_an_admin() {
    let s = serve_resources().await;
    let team = project(&s.pool, "team").await;
    let admin = user_with_token(&s.pool, "ada", false, &[(team, Role::Admin)]).await;
    let bob = user_with_token(&s.pool, "bob", false, &[]).await;
    let members = "/v1/projects/team/members";

    // Bob is no member: the project does not exist for him.
    s.expect_error(Method::GET, members, Some(&bob), None, 404, "not_found").await;
    // Ada adds him by name as a viewer: he sees the project and its members, changes nothing.
    let added =
        s.expect(Method::POST, members, Some(&admin), Some(json!({"user": "bob", "role": "viewer"})), 201).await;
    assert_eq!((added["name"].clone(), added["role"].clone()), (json!("bob"), json!("viewer")));
    let list = s.expect(Method::GET, members, Some(&bob), None, 200).await;
    assert_eq!(names(&list), [("ada".into(), "admin".into()), ("bob".into(), "viewer".into())]);
    let carol = json!({"user": "carol@example.com", "role": "member"});
    s.expect_error(Method::POST, members, Some(&bob), Some(carol.clone()), 403, "forbidden").await;
    // The same add again changes nothing (200); another role for a member is a conflict.
    s.expect(Method::POST, members, Some(&admin), Some(json!({"user": "bob", "role": "viewer"})), 200).await;
    let msg = s
        .expect_error(
            Method::POST,
            members,
            Some(&admin),
            Some(json!({"user": "bob", "role": "admin"})),
            409,
            "conflict",
        )
        .await;
    assert!(msg.contains("already a member, as viewer"), "{msg}");

    // An e-mail address nobody has is a user to come; a name nobody has is not found.
    let users = s.count("users").await;
    let carol_row = s.expect(Method::POST, members, Some(&admin), Some(carol), 201).await;
    assert_eq!(carol_row["email"], "carol@example.com");
    assert_eq!(s.count("users").await, users + 1);
    let msg = s
        .expect_error(
            Method::POST,
            members,
            Some(&admin),
            Some(json!({"user": "dave", "role": "viewer"})),
            404,
            "not_found",
        )
        .await;
    assert!(msg.contains("no user \"dave\""), "{msg}");
    for bad in [json!({"user": "", "role": "viewer"}), json!({"user": "bob", "role": "owner"}), json!({"user": "bob"})]
    {
        let status = s.call(Method::POST, members, Some(&admin), Some(bad.clone())).await.status().as_u16();
        assert!(status == 400 || status == 422, "{bad}: {status}");
    }
    assert_eq!(s.count("users").await, users + 1, "bad input created nobody");

    // Roles change by e-mail address too; a member can then do what the role allows.
    let changed = s
        .expect(
            Method::PATCH,
            "/v1/projects/team/members/carol@example.com",
            Some(&admin),
            Some(json!({"role": "admin"})),
            200,
        )
        .await;
    assert_eq!(changed["role"], "admin");
    s.expect(Method::PATCH, "/v1/projects/team/members/bob", Some(&admin), Some(json!({"role": "member"})), 200).await;
    s.expect_error(
        Method::PATCH,
        "/v1/projects/team/members/nobody@example.com",
        Some(&admin),
        Some(json!({"role": "admin"})),
        404,
        "not_found",
    )
    .await;

    // The last admin stays one: Ada may step down only while Carol is an admin too.
    s.expect(Method::PATCH, "/v1/projects/team/members/ada", Some(&admin), Some(json!({"role": "member"})), 200).await;
    s.expect_error(
        Method::PATCH,
        "/v1/projects/team/members/ada",
        Some(&admin),
        Some(json!({"role": "admin"})),
        403,
        "forbidden",
    )
    .await;
    let carol_token = {
        let id: control_plane::ids::UserId = carol_row["user_id"].as_str().unwrap().parse().unwrap();
        control_plane::auth::token_issue(&s.pool, id, "main", None, None, None)
            .await
            .unwrap()
            .secret
            .expose()
            .to_owned()
    };
    let msg = s
        .expect_error(
            Method::DELETE,
            "/v1/projects/team/members/carol@example.com",
            Some(&carol_token),
            None,
            409,
            "conflict",
        )
        .await;
    assert!(msg.contains("only admin"), "{msg}");
    let msg = s
        .expect_error(
            Method::PATCH,
            "/v1/projects/team/members/carol@example.com",
            Some(&carol_token),
            Some(json!({"role": "viewer"})),
            409,
            "conflict",
        )
        .await;
    assert!(msg.contains("only admin"), "{msg}");

    // Anyone may leave; removing someone else takes an admin; a second removal is a 404.
    s.expect_error(Method::DELETE, "/v1/projects/team/members/ada", Some(&bob), None, 403, "forbidden").await;
    s.expect(Method::DELETE, "/v1/projects/team/members/bob", Some(&bob), None, 204).await;
    s.expect_error(Method::GET, members, Some(&bob), None, 404, "not_found").await;
    s.expect(Method::DELETE, "/v1/projects/team/members/ada", Some(&carol_token), None, 204).await;
    s.expect_error(Method::DELETE, "/v1/projects/team/members/ada", Some(&carol_token), None, 404, "not_found").await;
    let list = s.expect(Method::GET, members, Some(&carol_token), None, 200).await;
    assert_eq!(names(&list), [("carol@example.com".into(), "admin".into())]);
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    let s = serve_resources().await;
    let team = project(&s.pool, "team").await;
    let ada = user_with_token(&s.pool, "ada", false, &[(team, Role::Admin)]).await;
    let bob = user_with_token(&s.pool, "bob", false, &[(team, Role::Admin)]).await;
    let body = Some(json!({"role": "viewer"}));
    let (a, b) = tokio::join!(
        s.call(Method::PATCH, "/v1/projects/team/members/bob", Some(&ada), body.clone()),
        s.call(Method::PATCH, "/v1/projects/team/members/ada", Some(&bob), body.clone()),
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    // One wins; the other either sees the last admin (409) or, demoted first, is no admin (403).
    assert!(statuses == [200, 403] || statuses == [200, 409], "{statuses:?}");
    let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM project_members WHERE role = 'admin'")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(admins, 1);
}

#[tokio::test]
async fn operators_grant_and_revoke_operators_and_one_always_remains() {
    let s = serve_resources().await;
    let root = user_with_token(&s.pool, "root", true, &[]).await;
    let eve = user_with_token(&s.pool, "eve", false, &[]).await;
    // Only operators grant; a user that is none is told so.
    s.expect_error(Method::PUT, "/v1/users/eve/operator", Some(&eve), None, 403, "forbidden").await;
    let granted = s.expect(Method::PUT, "/v1/users/eve/operator", Some(&root), None, 200).await;
    assert_eq!(granted["is_operator"], true);
    s.expect(Method::PUT, "/v1/users/eve/operator", Some(&root), None, 200).await;
    s.expect_error(Method::PUT, "/v1/users/nobody/operator", Some(&root), None, 404, "not_found").await;
    // Eve, now an operator, revokes root; then she is the last and stays one.
    let revoked = s.expect(Method::DELETE, "/v1/users/root/operator", Some(&eve), None, 200).await;
    assert_eq!(revoked["is_operator"], false);
    s.expect_error(Method::PUT, "/v1/users/root/operator", Some(&root), None, 403, "forbidden").await;
    let msg = s.expect_error(Method::DELETE, "/v1/users/eve/operator", Some(&eve), None, 409, "conflict").await;
    assert!(msg.contains("only operator"), "{msg}");
}
