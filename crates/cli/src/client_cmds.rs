//! Client commands: buckets, objects and status, for people and scripts.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tessera_proto::{ListEntry, ObjectData};
use tessera_sdk::{Client, ClientOptions, ListOptions, PutOptions};

use crate::args::{
    AdminTokenCommand, BucketCommand, ClusterArg, Command, KeyCommand, StorageClassCommand,
};
use crate::servers::{connect, load_cluster};
use crate::units::human_bytes;

/// Splits `bucket/key`; the key may contain further slashes.
fn split_target(t: &str, need_key: bool) -> Result<(&str, &str)> {
    let (bucket, key) = t.split_once('/').unwrap_or((t, ""));
    if bucket.is_empty() || (need_key && key.is_empty()) {
        bail!("{t:?}: expected BUCKET/KEY");
    }
    Ok((bucket, key))
}

fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    // Small transfers finish before a bar would be useful.
    if len.is_some_and(|l| l < 8 << 20) {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(l) => ProgressBar::new(l),
        None => ProgressBar::no_length(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn fmt_time(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Bucket { command } => bucket(command).await,
        Command::Put {
            file,
            target,
            content_type,
            user_meta,
            chunk_size,
            cluster,
        } => {
            let (bucket, key) = split_target(&target, true)?;
            let mut meta = BTreeMap::new();
            for kv in user_meta {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--meta {kv:?}: expected NAME=VALUE"))?;
                meta.insert(k.to_string(), v.to_string());
            }
            let cfg = load_cluster(&cluster.cluster)?;
            let options = ClientOptions {
                chunk_size: usize::try_from(chunk_size).unwrap_or(usize::MAX),
                ..ClientOptions::default()
            };
            let client = Client::connect_group(cfg.meta_addrs()?, &cfg.identity()?, options)
                .await
                .with_context(|| format!("cannot reach the cluster's meta at {}", cfg.meta))?;
            let opts = PutOptions {
                content_type,
                user_meta: meta,
                ..Default::default()
            };
            let info = if file.as_os_str() == "-" {
                client.put(bucket, key, tokio::io::stdin(), opts).await?
            } else {
                let f = tokio::fs::File::open(&file)
                    .await
                    .with_context(|| format!("opening {}", file.display()))?;
                let len = f.metadata().await?.len();
                let bar = progress(Some(len), "put");
                let info = client.put(bucket, key, bar.wrap_async_read(f), opts).await;
                bar.finish_and_clear();
                info?
            };
            println!("{bucket}/{key}\t{} bytes\tetag {}", info.size, info.etag);
            Ok(())
        }
        Command::Get {
            source,
            file,
            range,
            cluster,
        } => {
            let (bucket, key) = split_target(&source, true)?;
            let client = connect(&cluster).await?;
            let info = client.head(bucket, key).await?;
            // Its stored bytes are ciphertext; only the S3 gateway holds
            // (or is sent) the key that opens them.
            if info.headers.encryption.is_some() {
                bail!(
                    "{bucket}/{key} is stored with S3 server-side encryption: read it through the S3 gateway"
                );
            }
            let range = match range {
                None => None,
                Some(r) => {
                    let (a, b) = r
                        .split_once('-')
                        .ok_or_else(|| anyhow!("--range {r:?}: expected START-END"))?;
                    let start: u64 = a.parse().context("--range start")?;
                    let end: u64 = if b.is_empty() {
                        info.size
                    } else {
                        b.parse::<u64>().context("--range end")? + 1
                    };
                    Some(start..end.min(info.size))
                }
            };
            if file.as_os_str() == "-" {
                let mut out = tokio::io::stdout();
                client.read_object(&info, range, &mut out).await?;
            } else {
                get_to_file(&client, &info, range, &file).await?;
            }
            Ok(())
        }
        Command::Ls {
            target,
            recursive,
            cluster,
        } => {
            let (bucket, prefix) = split_target(&target, false)?;
            let client = connect(&cluster).await?;
            let mut opts = ListOptions {
                prefix: prefix.to_string(),
                delimiter: (!recursive).then(|| "/".to_string()),
                ..Default::default()
            };
            loop {
                let page = client.list(bucket, &opts).await?;
                for e in &page.entries {
                    match e {
                        ListEntry::Object {
                            key,
                            size,
                            mtime_ms,
                            ..
                        } => {
                            println!("{} {size:>12} {key}", fmt_time(*mtime_ms))
                        }
                        ListEntry::CommonPrefix(p) => println!("{:>19} {:>12} {p}", "", "PRE"),
                    }
                }
                match page.next {
                    Some(next) => opts.start_after = Some(next),
                    None => return Ok(()),
                }
            }
        }
        Command::Rm { target, cluster } => {
            let (bucket, key) = split_target(&target, true)?;
            let client = connect(&cluster).await?;
            if !client.delete(bucket, key).await? {
                bail!("no such key: {bucket}/{key}");
            }
            Ok(())
        }
        Command::Mv {
            from,
            to,
            replace,
            cluster,
        } => {
            let (bucket, key) = split_target(&from, true)?;
            let client = connect(&cluster).await?;
            let moved = client.rename(bucket, key, &to, replace).await?;
            println!(
                "renamed {bucket}/{key} to {bucket}/{to} ({moved} object{})",
                if moved == 1 { "" } else { "s" }
            );
            Ok(())
        }
        Command::Stat {
            target,
            json,
            cluster,
        } => {
            let (bucket, key) = split_target(&target, true)?;
            let client = connect(&cluster).await?;
            let info = client.head(bucket, key).await?;
            let (storage, chunks) = match &info.data {
                ObjectData::Inline(_) => ("inline", 0),
                ObjectData::Chunks(c) => ("chunks", c.len()),
            };
            if json {
                let placement: Vec<_> = client
                    .chunk_records(&info)
                    .await?
                    .iter()
                    .map(|c| {
                        let nodes: Vec<String> = c.fragments.iter().map(|f| f.node.to_string()).collect();
                        let hashes: Vec<String> = c.fragments.iter().map(|f| hex::encode(f.hash)).collect();
                        json!({"id": c.id.to_string(), "len": c.len, "policy": c.policy.to_string(), "fragment_len": c.fragment_len, "nodes": nodes, "hashes": hashes})
                    })
                    .collect();
                let v = json!({
                    "bucket": bucket, "key": info.key, "size": info.size, "etag": info.etag,
                    "content_type": info.content_type, "mtime_ms": info.mtime_ms, "user_meta": info.user_meta,
                    "storage": storage, "chunks": chunks, "placement": placement,
                });
                println!("{v}");
            } else {
                println!("key:          {bucket}/{}", info.key);
                println!("size:         {} ({})", info.size, human_bytes(info.size));
                println!("etag:         {}", info.etag);
                println!(
                    "content-type: {}",
                    info.content_type.as_deref().unwrap_or("-")
                );
                println!("modified:     {} UTC", fmt_time(info.mtime_ms));
                println!(
                    "storage:      {storage}{}",
                    if chunks > 0 {
                        format!(", {chunks} chunks")
                    } else {
                        String::new()
                    }
                );
                for (k, v) in &info.user_meta {
                    println!("meta:         {k}={v}");
                }
            }
            Ok(())
        }
        Command::Status { json, cluster } => status(&cluster, json).await,
        Command::AdminToken { command } => admin_token(command).await,
        Command::StorageClass { command } => storage_class(command).await,
        other => bail!("not a client command: {other:?}"),
    }
}

/// Writes to a temp file beside the target and renames it into place only
/// when every byte has been read and verified: a failed read leaves no
/// partial file that looks complete.
async fn get_to_file(
    client: &Client,
    info: &tessera_proto::ObjectInfo,
    range: Option<std::ops::Range<u64>>,
    file: &Path,
) -> Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", file.display()))?;
    let tmp = dir.join(format!(
        ".{}.tessera-{:08x}",
        name.to_string_lossy(),
        rand::random::<u32>()
    ));
    let len = range.as_ref().map(|r| r.end - r.start).unwrap_or(info.size);
    let result = async {
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("creating {}", tmp.display()))?;
        let bar = progress(Some(len), "get");
        let r = client
            .read_object(info, range, &mut bar.wrap_async_write(&mut f))
            .await;
        bar.finish_and_clear();
        r?;
        f.sync_all().await?;
        tokio::fs::rename(&tmp, file)
            .await
            .with_context(|| format!("renaming into {}", file.display()))?;
        Ok(())
    };
    let r: Result<()> = result.await;
    if r.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    r
}

async fn bucket(command: BucketCommand) -> Result<()> {
    match command {
        BucketCommand::Create {
            name,
            policy,
            owner,
            cluster,
        } => {
            let owner = owner.or(load_cluster(&cluster.cluster)?.bucket_owner);
            let client = connect(&cluster).await?;
            // A missing owner key is refused before the bucket exists.
            if let Some(key) = &owner {
                client
                    .access_key(key)
                    .await
                    .with_context(|| format!("no access key {key} to own the bucket"))?;
            }
            let b = client.create_bucket(&name, policy).await?;
            match owner {
                Some(key) => {
                    client
                        .set_grant(&name, &key, Some(tessera_proto::Permission::Owner))
                        .await?;
                    println!("created bucket {} ({}), owned by {key}", b.name, b.policy);
                }
                None => println!("created bucket {} ({})", b.name, b.policy),
            }
        }
        BucketCommand::Ls { json, cluster } => {
            let client = connect(&cluster).await?;
            let buckets = client.list_buckets().await?;
            let grants = client.grants(None, None).await?;
            let usage = client.bucket_usage().await?;
            // The same document as the admin API's GET /v1/buckets.
            let docs = tessera_admin::status::BucketDocument::list(&buckets, &grants, &usage);
            if json {
                println!("{}", serde_json::to_string(&docs)?);
            } else {
                println!(
                    "{:<19}  {:<8} {:>10} {:>11}  NAME",
                    "CREATED", "POLICY", "OBJECTS", "SIZE"
                );
                for b in &docs {
                    println!(
                        "{}  {:<8} {:>10} {:>11}  {}",
                        fmt_time(b.created_ms),
                        b.policy,
                        b.objects,
                        human_bytes(b.bytes),
                        b.name
                    );
                }
            }
        }
        BucketCommand::Rm { name, cluster } => {
            connect(&cluster).await?.delete_bucket(&name).await?;
        }
        BucketCommand::Allow {
            bucket,
            key,
            permission,
            cluster,
        } => {
            let client = connect(&cluster).await?;
            client.set_grant(&bucket, &key, Some(permission)).await?;
            println!(
                "key {key} may {} bucket {bucket}",
                match permission {
                    tessera_proto::Permission::Read => "read",
                    tessera_proto::Permission::Write => "read and write",
                    tessera_proto::Permission::Owner => "own",
                }
            );
        }
        BucketCommand::Deny {
            bucket,
            key,
            cluster,
        } => {
            connect(&cluster)
                .await?
                .set_grant(&bucket, &key, None)
                .await?;
        }
    }
    Ok(())
}

pub async fn key(command: KeyCommand) -> Result<()> {
    match command {
        KeyCommand::Create {
            name,
            json,
            access_key,
            secret_key,
            cluster,
        } => {
            let client = connect(&cluster).await?;
            let k = client.create_key(&name, access_key, secret_key).await?;
            if json {
                println!(
                    "{}",
                    json!({"access_key": k.id, "secret_key": k.secret, "name": k.name})
                );
            } else {
                println!("access key: {}", k.id);
                println!("secret key: {}", k.secret);
            }
        }
        KeyCommand::Ls { json, cluster } => {
            let client = connect(&cluster).await?;
            let keys = client.list_keys().await?;
            let grants = client.grants(None, None).await?;
            let of = |id: &str| -> Vec<_> { grants.iter().filter(|g| g.key == id).collect() };
            if json {
                // The same document as the admin API's GET /v1/keys.
                let docs = tessera_admin::status::KeyDocument::list(&keys, &grants);
                println!("{}", serde_json::to_string(&docs)?);
            } else {
                for k in &keys {
                    let g: Vec<String> = of(&k.id)
                        .iter()
                        .map(|g| format!("{}:{}", g.bucket, g.permission.as_str()))
                        .collect();
                    println!(
                        "{}  {}  {:<20} {}",
                        fmt_time(k.created_ms),
                        k.id,
                        k.name,
                        g.join(" ")
                    );
                }
            }
        }
        KeyCommand::Rm { id, cluster } => {
            if !connect(&cluster).await?.delete_key(&id).await? {
                bail!("no access key {id}");
            }
        }
    }
    Ok(())
}

/// The meta group's status, from its leader.
async fn group_status(client: &Client) -> Result<tessera_proto::MetaGroupStatus> {
    group_request(client, tessera_proto::GroupRequest::Status).await
}

async fn group_request(
    client: &Client,
    req: tessera_proto::GroupRequest,
) -> Result<tessera_proto::MetaGroupStatus> {
    use tessera_proto::{MetaRequest, MetaResponse};
    let answer = client.meta_client().call(MetaRequest::Group(req)).await;
    match answer.map_err(group_change_error)? {
        MetaResponse::Group(g) => Ok(g),
        other => bail!("meta answered a group request with {other:?}"),
    }
}

/// `{leader, term, committed, members: [{id, addr, role, match_index, lag}]}`
/// (the contract of `tessera meta status --json`).
fn group_json(g: &tessera_proto::MetaGroupStatus) -> serde_json::Value {
    let members: Vec<_> = g
        .members
        .iter()
        .map(|m| {
            json!({"id": m.id, "addr": m.addr, "role": m.role,
                   "match_index": m.match_index, "lag": m.lag})
        })
        .collect();
    json!({"leader": g.leader, "term": g.term, "committed": g.committed, "members": members})
}

fn print_group(g: &tessera_proto::MetaGroupStatus) {
    let leader = g
        .members
        .iter()
        .find(|m| Some(m.id) == g.leader)
        .map(|m| format!("{} ({})", m.id, m.addr))
        .unwrap_or_else(|| "none (election in progress)".into());
    println!(
        "meta group: {} replicas, leader {leader}, term {}",
        g.members.len(),
        g.term
    );
    for m in &g.members {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "  {:<20} {:<22} {:<9} match {:<10} lag {}",
            m.id,
            m.addr,
            m.role,
            opt(m.match_index),
            opt(m.lag)
        );
    }
}

/// A client holding a meta certificate, which changes of the group need
/// (meta refuses them from anyone else): issued here, in memory only,
/// when the cluster file holds the CA's key; otherwise the file's own
/// client, whose changes meta will refuse with a reason.
async fn group_admin(cluster: &ClusterArg) -> Result<Client> {
    let cfg = load_cluster(&cluster.cluster)?;
    let Some(ca) = cfg.ca()? else {
        return connect(cluster).await;
    };
    let (cert, key) = ca.issue(tessera_net::role::META)?;
    let identity = tessera_net::Identity::from_pem(&cfg.ca_cert_pem()?, &cert, &key)?;
    Client::connect_group(cfg.meta_addrs()?, &identity, ClientOptions::default())
        .await
        .with_context(|| format!("cannot reach the cluster's meta at {}", cfg.meta))
}

/// Why a change of the group was refused, with what to do when it was for
/// want of a meta certificate.
fn group_change_error(e: tessera_sdk::MetaCallError) -> anyhow::Error {
    let forbidden = matches!(&e, tessera_sdk::MetaCallError::Refused(r)
        if r.code == tessera_proto::ErrorCode::Forbidden);
    let e = anyhow::Error::new(e);
    if forbidden {
        e.context(
            "changing the meta group needs a meta certificate: run this where the cluster \
             file holds the CA's key (ca_key), and the CLI issues itself one",
        )
    } else {
        e
    }
}

/// `tessera meta status|add|remove`.
pub async fn meta_group(command: crate::args::MetaCommand, cluster: &ClusterArg) -> Result<()> {
    use crate::args::MetaCommand;
    use tessera_proto::GroupRequest;
    let client = match command {
        MetaCommand::Status { .. } => connect(cluster).await?,
        MetaCommand::Add { .. } | MetaCommand::Remove { .. } => group_admin(cluster).await?,
    };
    match command {
        MetaCommand::Status { json } => {
            let g = group_status(&client).await?;
            if json {
                println!("{}", group_json(&g));
            } else {
                print_group(&g);
            }
        }
        MetaCommand::Add { addr } => {
            let g = group_request(&client, GroupRequest::Add { addr: addr.clone() }).await?;
            println!("meta replica {addr} added; add it to the cluster file's meta list too");
            print_group(&g);
        }
        MetaCommand::Remove { id } => {
            let g = group_request(&client, GroupRequest::Remove { id }).await?;
            println!("meta replica {id} removed; remove it from the cluster file's meta list too");
            print_group(&g);
        }
    }
    Ok(())
}

async fn status(cluster: &ClusterArg, as_json: bool) -> Result<()> {
    let client = connect(cluster).await?;
    let s = client.status().await?;
    let group = group_status(&client).await?;
    let garbage = client.garbage().await?;
    let lifecycle = client.lifecycle_status().await?;
    let (h, r) = (&s.health, &s.repair);
    if as_json {
        // The same document as the admin API's GET /v1/status.
        println!(
            "{}",
            serde_json::to_string(
                &tessera_admin::StatusDocument::new(&s, &garbage).with_lifecycle(&lifecycle)
            )?
        );
        return Ok(());
    }
    print_group(&group);
    let count = |state| s.map.nodes.iter().filter(|n| n.state == state).count();
    use tessera_proto::NodeState;
    println!(
        "nodes: {} up, {} down, {} out    default policy: {}",
        count(NodeState::Up),
        count(NodeState::Down),
        count(NodeState::Out),
        s.map.default_policy
    );
    println!(
        "{:<16}  {:<21}  {:<5}  {:<8}  {:<8}  {:>10}  {:>10}  {:>9}",
        "ID", "ADDRESS", "STATE", "ADMIN", "ZONE", "CAPACITY", "USED", "FRAGMENTS"
    );
    for n in &s.map.nodes {
        println!(
            "{:<16}  {:<21}  {:<5}  {:<8}  {:<8}  {:>10}  {:>10}  {:>9}",
            n.id.to_string(),
            n.addr,
            n.state.as_str(),
            n.admin.as_str(),
            n.zone.as_deref().unwrap_or("-"),
            human_bytes(n.capacity),
            human_bytes(n.used),
            n.fragments
        );
    }
    println!(
        "buckets: {}  objects: {}  corrupt fragment reports: {}",
        s.buckets, s.objects, s.corrupt_reports
    );
    println!(
        "chunks: {} total, {} at full redundancy, {} degraded, {} at risk, {} lost{}",
        h.total,
        h.healthy,
        h.degraded,
        h.at_risk,
        h.lost,
        if h.misplaced > 0 {
            format!(" ({} to move off draining nodes)", h.misplaced)
        } else {
            String::new()
        }
    );
    let throughput = tessera_admin::ThroughputDocument::of(&s.map.nodes);
    println!(
        "throughput on the nodes: {}/s written, {}/s read (fragments: parity and repair included)",
        human_bytes(throughput.write_bytes_per_s),
        human_bytes(throughput.read_bytes_per_s)
    );
    let todo = r.pending_fragments + r.moving_fragments;
    if todo > 0 {
        println!(
            "repair: {} fragments to rebuild ({}), {} to move; {}/s{}",
            r.pending_fragments,
            human_bytes(r.pending_bytes),
            r.moving_fragments,
            human_bytes(r.rate_bytes_per_s),
            match r.eta_s {
                Some(eta) => format!(", done in about {eta} s"),
                None => String::new(),
            }
        );
    } else {
        println!(
            "repair: idle ({} fragments rebuilt, {} moved so far)",
            r.rebuilt_fragments, r.moved_fragments
        );
    }
    if garbage.fragments > 0 {
        println!(
            "awaiting garbage collection: {} fragments ({}) of deleted or replaced data{}",
            garbage.fragments,
            human_bytes(garbage.bytes),
            match garbage.oldest_ms {
                Some(oldest) => format!(
                    ", collected from {} UTC (gc grace {} s)",
                    fmt_time(oldest.saturating_add(garbage.grace_ms)),
                    garbage.grace_ms / 1000
                ),
                None => String::new(),
            }
        );
    }
    if lifecycle.passes > 0 || lifecycle.pass_started_ms.is_some() {
        println!(
            "lifecycle: {}, {} passes; {} objects expired, {} versions removed, {} uploads aborted, {} locked versions kept, {} transitions queued",
            match &lifecycle.bucket {
                Some(b) if lifecycle.pass_started_ms.is_some() =>
                    format!("pass running (bucket {b})"),
                _ if lifecycle.pass_started_ms.is_some() => "pass running".to_string(),
                _ => "idle".to_string(),
            },
            lifecycle.passes,
            lifecycle.expired_objects,
            lifecycle.removed_versions,
            lifecycle.aborted_uploads,
            lifecycle.kept_locked,
            lifecycle.queued_transitions
        );
    }
    if s.balance.fullest_over_fair > 0.0 {
        println!(
            "load balance: fullest node at {:.2}x its fair share (max deviation {:.1}%)",
            s.balance.fullest_over_fair,
            s.balance.max_deviation * 100.0
        );
    }
    Ok(())
}

async fn storage_class(command: StorageClassCommand) -> Result<()> {
    match command {
        StorageClassCommand::Set {
            class,
            policy,
            cluster,
        } => {
            connect(&cluster)
                .await?
                .set_storage_class(&class, Some(policy))
                .await?;
            println!("storage class {class}: {policy}");
        }
        StorageClassCommand::Rm { class, cluster } => {
            connect(&cluster)
                .await?
                .set_storage_class(&class, None)
                .await?;
            println!("storage class {class}: the bucket's policy");
        }
        StorageClassCommand::Ls { json, cluster } => {
            let classes = connect(&cluster).await?.storage_classes().await?;
            if json {
                let v: Vec<_> = classes
                    .iter()
                    .map(|(c, p)| json!({"class": c, "policy": p.to_string()}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!("STANDARD  (each bucket's policy)");
                for (c, p) in &classes {
                    println!("{c}  {p}");
                }
            }
        }
    }
    Ok(())
}

async fn admin_token(command: AdminTokenCommand) -> Result<()> {
    use tessera_admin::token::token_id;
    match command {
        AdminTokenCommand::Create {
            name,
            json,
            cluster,
        } => {
            let client = connect(&cluster).await?;
            let token = tessera_admin::token::create_token(&client, &name).await?;
            if json {
                println!("{}", json!({ "token": token }));
            } else {
                println!("admin token: {token}");
                println!("(shown once: meta keeps only its hash)");
            }
        }
        AdminTokenCommand::Ls { json, cluster } => {
            let tokens = connect(&cluster).await?.admin_tokens().await?;
            if json {
                let v: Vec<_> = tokens
                    .iter()
                    .map(|(hash, t)| {
                        json!({"id": token_id(hash), "name": t.name, "created_ms": t.created_ms})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for (hash, t) in &tokens {
                    println!("{}  {}  {}", fmt_time(t.created_ms), token_id(hash), t.name);
                }
            }
        }
        AdminTokenCommand::Rm { id, cluster } => {
            if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!(
                    "{id:?}: give at least 8 hex digits of the token's id (tessera admin-token ls)"
                );
            }
            let client = connect(&cluster).await?;
            let id = id.to_ascii_lowercase();
            let matches: Vec<String> = client
                .admin_tokens()
                .await?
                .into_iter()
                .map(|(hash, _)| hash)
                .filter(|hash| hash.starts_with(&id))
                .collect();
            match matches.as_slice() {
                [hash] => {
                    client.delete_admin_token(hash).await?;
                    println!("admin token {} revoked", token_id(hash));
                }
                [] => bail!("no admin token {id}"),
                _ => bail!(
                    "{id} names {} admin tokens: give more digits",
                    matches.len()
                ),
            }
        }
    }
    Ok(())
}
