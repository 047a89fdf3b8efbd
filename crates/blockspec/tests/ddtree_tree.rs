//! DDTree tree construction and walk conform to the authors' reference (`ddtree.py`): on the
//! fixed drafter top-K of tests/fixtures/ddtree/trees.json (made by
//! scripts/ref/ddtree/make_tree_fixture.py from the reference's own code), our builder gives the
//! same nodes in the same order with the same parents and depths, every row sees what the
//! reference's visibility matrix says, and walks of given target tokens accept the same rows
//! and end on the same token.

mod common;

use blockspec::decode::spec::tree::{DraftTopK, DraftTree};

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    common::ids(v)
}

fn usizes(v: &serde_json::Value) -> Vec<usize> {
    u32s(v).into_iter().map(|x| x as usize).collect()
}

#[test]
fn trees_and_walks_match_the_reference() {
    let fx = common::read_json("ddtree/trees.json");
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 70);
    let mut accepted_depths = std::collections::BTreeSet::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let budget = case["budget"].as_u64().expect("budget") as usize;
        let rows_lp = case["top_log_probs"].as_array().expect("log-probs");
        let rows_id = case["top_token_ids"].as_array().expect("ids");
        let k = rows_id[0].as_array().expect("row").len();
        let mut cand = DraftTopK {
            k,
            ..Default::default()
        };
        for (lp, id) in rows_lp.iter().zip(rows_id) {
            cand.ids.extend(u32s(id));
            for x in lp.as_array().expect("row") {
                cand.logprobs.push(x.as_f64().expect("log-prob") as f32);
            }
        }
        let root = 1_000_000;
        let t = DraftTree::build(root, &cand, budget, false);
        assert_eq!(t.tokens[0], root);
        assert_eq!(
            t.tokens[1..],
            u32s(&case["node_token_ids"])[..],
            "{name}: node tokens"
        );
        assert_eq!(
            t.depths[1..],
            usizes(&case["node_depths"])[..],
            "{name}: depths"
        );
        let parents: Vec<i64> = case["parents"]
            .as_array()
            .expect("parents")
            .iter()
            .map(|p| p.as_i64().expect("parent"))
            .collect();
        assert_eq!(parents[0], -1);
        let ours: Vec<i64> = t.parents[1..].iter().map(|&p| p as i64).collect();
        assert_eq!(ours, parents[1..], "{name}: parents");
        for (i, vis) in case["visible"]
            .as_array()
            .expect("visible")
            .iter()
            .enumerate()
        {
            assert_eq!(t.visible(i), usizes(vis), "{name}: row {i} visibility");
        }
        for w in case["walks"].as_array().expect("walks") {
            let posterior = u32s(&w["posterior"]);
            let mut asked = Vec::new();
            let (path, bonus) = t.walk(|i| {
                asked.push(i);
                posterior[i]
            });
            assert_eq!(path, usizes(&w["accepted"]), "{name}: accepted rows");
            assert_eq!(bonus as u64, w["next_token"].as_u64().expect("next"));
            assert_eq!(asked, path, "{name}: one target draw per accepted row");
            accepted_depths.insert(path.len() - 1);
        }
    }
    // The walks reach several depths, not only the root.
    assert!(accepted_depths.len() >= 6, "{accepted_depths:?}");
}
