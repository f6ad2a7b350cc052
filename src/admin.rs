//! `verdict policy|schema|entity …`: administration through `verdict-client`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use anyhow::Context;
use serde_json::Value;
use verdict_client::Client;
use verdict_client::EntityUid;
use verdict_client::SchemaFormat;

use crate::cli::EntityCommand;
use crate::cli::Output;
use crate::cli::PolicyCommand;
use crate::cli::SchemaCommand;
use crate::cli::SchemaFormatArg;
use crate::output::print_json;
use crate::output::print_table;
use crate::output::read_input;
use crate::output::written;

/// Longest policy summary in `policy list`.
const SUMMARY_CHARS: usize = 72;

/// `verdict policy …`.
pub async fn policy(client: &Client, cmd: PolicyCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Put { id, file, write } => {
            let cedar = read_input(&file)?;
            let key = write.idempotency_key.as_deref();
            let v = client.put_policy(&id, &cedar, write.if_match, key).await?;
            written(out, &format!("put policy `{id}`"), v)?;
        }
        PolicyCommand::Get { id } => {
            let p = client.get_policy(&id).await?;
            match out {
                Output::Json => print_json(&p)?,
                // A `//` comment keeps the output valid Cedar, so it can be edited and put back.
                Output::Table => {
                    println!("// id: {}, version: {}", p.id, p.version);
                    println!("{}", p.cedar.trim_end());
                }
            }
        }
        PolicyCommand::List => {
            let list = client.list_policies().await?;
            match out {
                Output::Json => print_json(&list)?,
                Output::Table => {
                    let rows: Vec<Vec<String>> = list
                        .policies
                        .iter()
                        .map(|p| vec![p.id.clone(), p.version.to_string(), summary(&p.cedar)])
                        .collect();
                    print_table(&["ID", "VERSION", "POLICY"], &rows);
                    println!(
                        "{} {} at version {}",
                        list.policies.len(),
                        if list.policies.len() == 1 {
                            "policy"
                        } else {
                            "policies"
                        },
                        list.version
                    );
                }
            }
        }
        PolicyCommand::Delete { id, write } => {
            let key = write.idempotency_key.as_deref();
            let v = client.delete_policy(&id, write.if_match, key).await?;
            written(out, &format!("deleted policy `{id}`"), v)?;
        }
        PolicyCommand::Load { file, write } => {
            let cedar = read_input(&file)?;
            let key = write.idempotency_key.as_deref();
            let v = client.replace_policies(&cedar, write.if_match, key).await?;
            written(
                out,
                &format!("replaced the policy set from `{}`", file.display()),
                v,
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `verdict schema …`.
pub async fn schema(client: &Client, cmd: SchemaCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        SchemaCommand::Put {
            file,
            format,
            write,
        } => {
            let text = read_input(&file)?;
            let is_json = match format {
                Some(f) => f == SchemaFormatArg::Json,
                None => has_json_extension(&file),
            };
            let key = write.idempotency_key.as_deref();
            let v = client
                .put_schema(&text, is_json, write.if_match, key)
                .await?;
            let kind = if is_json { "JSON" } else { "Cedar" };
            written(out, &format!("set the schema, {kind} format"), v)?;
        }
        SchemaCommand::Get => {
            let s = client.get_schema().await?;
            match (out, s.format, &s.schema) {
                (Output::Json, _, _) => print_json(&s)?,
                (Output::Table, SchemaFormat::Cedar, Value::String(text)) => {
                    println!("// version: {}", s.version);
                    println!("{}", text.trim_end());
                }
                // JSON has no comments; the version is in `--output json`.
                (Output::Table, _, schema) => print_json(schema)?,
            }
        }
        SchemaCommand::Delete { write } => {
            let key = write.idempotency_key.as_deref();
            let v = client.delete_schema(write.if_match, key).await?;
            written(out, "deleted the schema", v)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `verdict entity …`.
pub async fn entity(client: &Client, cmd: EntityCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        EntityCommand::Put { file, write } => {
            let entities = read_entities(&file)?;
            let n = entities.len();
            let key = write.idempotency_key.as_deref();
            let v = client
                .upsert_entities(&entities, write.if_match, key)
                .await?;
            written(
                out,
                &format!("upserted {n} {}", plural(n, "entity", "entities")),
                v,
            )?;
        }
        EntityCommand::Get { r#type, id } => {
            let rec = client.get_entity(&r#type, &id).await?;
            match out {
                Output::Json => print_json(&rec)?,
                Output::Table => print_entity(&rec.entity, rec.version)?,
            }
        }
        EntityCommand::Delete { r#type, id, write } => {
            let uid = [EntityUid::new(&r#type, &id)];
            let key = write.idempotency_key.as_deref();
            let v = client.delete_entities(&uid, write.if_match, key).await?;
            written(out, &format!("deleted {}", cedar_uid(&r#type, &id)), v)?;
        }
        EntityCommand::Parents {
            r#type,
            id,
            add,
            remove,
            write,
        } => {
            let (add, remove) = (parse_uid_args(&add)?, parse_uid_args(&remove)?);
            let key = write.idempotency_key.as_deref();
            let v = client
                .edit_parents((&r#type, &id), &add, &remove, write.if_match, key)
                .await?;
            written(
                out,
                &format!("edited the parents of {}", cedar_uid(&r#type, &id)),
                v,
            )?;
        }
        EntityCommand::Load { file, write } => {
            let entities = read_entities(&file)?;
            let n = entities.len();
            let key = write.idempotency_key.as_deref();
            let v = client
                .replace_entities(&entities, write.if_match, key)
                .await?;
            written(out, &format!("replaced all entities with {n}"), v)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn has_json_extension(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Reads a JSON array of entities; a single entity object is taken as an array of one.
fn read_entities(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = read_input(path)?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not valid JSON", path.display()))?;
    match value {
        Value::Array(items) => Ok(items),
        obj @ Value::Object(_) => Ok(vec![obj]),
        _ => bail!(
            "`{}` must hold a JSON array of entities (Cedar entity format: uid, attrs, parents)",
            path.display()
        ),
    }
}

/// The first line of a policy that is not an annotation or comment, squeezed to one line.
fn summary(cedar: &str) -> String {
    let body = cedar
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('@') && !l.starts_with("//"))
        .unwrap_or("");
    let squeezed = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if squeezed.chars().count() > SUMMARY_CHARS {
        let cut: String = squeezed.chars().take(SUMMARY_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        squeezed
    }
}

fn print_entity(entity: &Value, version: u64) -> anyhow::Result<()> {
    let uid = |v: &Value| match (v["type"].as_str(), v["id"].as_str()) {
        (Some(t), Some(i)) => cedar_uid(t, i),
        _ => v.to_string(),
    };
    println!("uid:      {}", uid(&entity["uid"]));
    println!("version:  {version}");
    let parents: Vec<String> = entity["parents"]
        .as_array()
        .map(|ps| ps.iter().map(uid).collect())
        .unwrap_or_default();
    if parents.is_empty() {
        println!("parents:  (none)");
    } else {
        println!("parents:  {}", parents.join(", "));
    }
    for key in ["attrs", "tags"] {
        match &entity[key] {
            Value::Object(m) if !m.is_empty() => {
                println!("{key}:");
                for (k, v) in m {
                    println!("  {k}: {}", serde_json::to_string(v)?);
                }
            }
            _ => println!("{:<9} {{}}", format!("{key}:")),
        }
    }
    Ok(())
}

/// `Type::"id"` with the id escaped as a JSON string (Cedar's escapes agree for common text).
pub fn cedar_uid(r#type: &str, id: &str) -> String {
    format!("{type}::{}", Value::String(id.to_owned()))
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// `Type::"id"` arguments as `(type, id)` pairs (the quotes may be left out: `Type::id`).
fn parse_uid_args(args: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    args.iter()
        .map(|a| {
            let Some((t, id)) = a.rsplit_once("::") else {
                anyhow::bail!("`{a}` is not an entity uid: write it as Type::\"id\"");
            };
            let id = id
                .strip_prefix('"')
                .and_then(|i| i.strip_suffix('"'))
                .unwrap_or(id);
            if t.is_empty() || id.is_empty() {
                anyhow::bail!("`{a}` is not an entity uid: write it as Type::\"id\"");
            }
            Ok((t.to_string(), id.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_skips_annotations_and_comments() {
        let cedar = "// allow reading\n@id(\"p1\")\npermit(\n  principal == User::\"alice\",\n";
        assert_eq!(summary(cedar), "permit(");
        let long = format!(
            "permit(principal, action, resource) when {{ {} }};",
            "x".repeat(200)
        );
        assert_eq!(summary(&long).chars().count(), SUMMARY_CHARS);
    }

    #[test]
    fn uids_are_printed_as_cedar() {
        assert_eq!(cedar_uid("Ns::User", "a\"b"), r#"Ns::User::"a\"b""#);
    }

    #[test]
    fn schema_format_follows_the_extension() {
        assert!(has_json_extension(Path::new("s.JSON")));
        assert!(!has_json_extension(Path::new("s.cedarschema")));
        assert!(!has_json_extension(Path::new("-")));
    }
}
