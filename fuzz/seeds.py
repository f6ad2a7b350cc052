#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/: ordinary inputs, and the hostile inputs of
issue #13 (deep if/else chains, deep `Set<`, a long parent chain, a hub entity, a long `like`
pattern, `__expr` in context, subjects that are not objects). Deterministic: the same files every
run. Seeds over 64 KB are named `big-*`, are not committed (.gitignore) and are written here at CI
time by run.sh."""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BIG = 64 * 1024


def put(target, name, text):
    data = text.encode() if isinstance(text, str) else text
    if len(data) > BIG and not name.startswith("big-"):
        sys.exit(f"seed {target}/{name} is {len(data)} bytes: name it big-* so it is not committed")
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def policies():
    t = "policy_text"
    put(t, "permit-all.cedar", "permit(principal, action, resource);\n")
    put(t, "scoped.cedar", '@id("r")\npermit(principal in Group::"admins", action == Action::"read", '
        'resource in Folder::"f") when { context.ip.isInRange(ip("10.0.0.0/8")) && '
        'resource.owner == principal } unless { principal.name like "*bot*" };\n')
    put(t, "set.cedar", 'permit(principal, action, resource) when { [1, 2, 3].contains(context.n) '
        '&& {a: 1, b: "x"}.a == 1 && decimal("1.5").lessThan(decimal("2.0")) };\n'
        'forbid(principal, action, resource) unless { principal has age && principal.age >= 18 };\n')
    # Case 1: Cedar's parser recursed once per `if`, past a 2 MiB worker stack.
    chain = "".join("if context.x == %d then false else " % i for i in range(1300))
    put(t, "if-else-chain-1300.cedar", "permit(principal,action,resource) when { %strue };\n" % chain)
    put(t, "not-chain-3000.cedar", "permit(principal,action,resource) when { %scontext.b };\n" % ("!" * 3000))
    put(t, "neg-chain-3000.cedar", "permit(principal,action,resource) when { %s1 == 1 };\n" % ("-" * 3000))
    put(t, "parens-33.cedar", "permit(principal,action,resource) when { %strue%s };\n" % ("(" * 33, ")" * 33))
    put(t, "and-chain-2500.cedar", "permit(principal,action,resource) when { %s };\n"
        % " && ".join("context.x == %d" % i for i in range(2500)))
    # Case 8: an 8,000-character `like` pattern.
    put(t, "like-8000.cedar", 'forbid(principal,action,resource) when { context.s like "*%s*" };\n' % ("a" * 8000))


def schemas():
    t = "schema_text"
    # First byte: `0` Cedar schema text, `1` JSON schema.
    put(t, "cedar-basic", '0entity User in [Group] { name: String, age?: Long };\nentity Group;\n'
        'entity Doc { owner: User, tags: Set<String> };\n'
        'action read appliesTo { principal: [User], resource: [Doc], context: { ip: ipaddr } };\n')
    put(t, "cedar-namespace", '0namespace App { type Id = String; entity A { id: Id }; '
        'action "do" appliesTo { principal: A, resource: A }; }\n')
    put(t, "json-basic", "1" + json.dumps({"": {"entityTypes": {"User": {"shape": {"type": "Record",
        "attributes": {"n": {"type": "Long"}}}}}, "actions": {"read": {"appliesTo": {
        "principalTypes": ["User"], "resourceTypes": ["User"]}}}}}))
    # Case 2: `Set<` nested 1,500 deep.
    put(t, "set-1500", "0type T = %sLong%s;\n" % ("Set<" * 1500, ">" * 1500))
    element = '{"type": "Set", "element": ' * 1500 + '{"type": "Long"}' + "}" * 1500
    nested = '1{"": {"entityTypes": {}, "actions": {}, "commonTypes": {"T": %s}}}' % element
    put(t, "big-json-set-1500" if len(nested) > BIG else "json-set-1500", nested)
    # Case 8: a 2,000-deep action hierarchy.
    actions = ["action a0;"] + ['action a%d in [a%d];' % (i, i - 1) for i in range(1, 2000)]
    put(t, "action-chain-2000", "0" + "\n".join(actions) + "\n")


def uid(ty, i):
    return {"type": ty, "id": str(i)}


def entities():
    t = "entities_json"
    put(t, "basic.json", json.dumps([
        {"uid": uid("User", "carol"), "attrs": {"age": 41, "tags": ["a", "b"], "ip": {"__extn": {"fn": "ip", "arg": "10.1.2.3"}}},
         "parents": [uid("Group", "admins")]},
        {"uid": uid("Doc", "d2"), "attrs": {"owner": {"__entity": uid("User", "carol")}}, "parents": []},
    ]))
    put(t, "reparent.json", json.dumps([{"uid": uid("Group", "staff"), "attrs": {}, "parents": [uid("Group", "admins")]}]))
    put(t, "expr-attr.json", json.dumps([{"uid": uid("User", "x"), "attrs": {"a": {"__expr": "1 + 1"}}, "parents": []}]))
    # Case 3: a 1,000-long parent chain sent leaf first.
    chain = [{"uid": uid("N", i), "attrs": {}, "parents": [uid("N", i + 1)]} for i in range(999)]
    chain.append({"uid": uid("N", 999), "attrs": {}, "parents": []})
    put(t, "big-chain-1000.json", json.dumps(chain))
    # Case 4: a hub with 2,000 parents and 2,000 children.
    hub = [{"uid": uid("P", i), "attrs": {}, "parents": []} for i in range(2000)]
    hub.append({"uid": uid("Hub", "h"), "attrs": {}, "parents": [uid("P", i) for i in range(2000)]})
    hub += [{"uid": uid("C", i), "attrs": {}, "parents": [uid("Hub", "h")]} for i in range(2000)]
    put(t, "big-hub-2000.json", json.dumps(hub))


def authzen():
    t = "authzen_body"
    subj = {"type": "User", "id": "alice"}
    act = {"name": "read"}
    res = {"type": "Doc", "id": "d1"}
    put(t, "evaluation.json", json.dumps({"subject": subj, "action": act, "resource": res,
                                          "context": {"level": 3}}))
    put(t, "properties.json", json.dumps({"subject": dict(subj, properties={"age": 7}), "action": act,
                                          "resource": dict(res, properties={"owner": {"__entity": subj}})}))
    put(t, "evaluations.json", json.dumps({"subject": subj, "context": {"level": 1},
        "evaluations": [{"action": act, "resource": res}, {"action": {"name": "write"}, "resource": res},
                        {"subject": {"type": "User", "id": "bob"}}],
        "options": {"evaluations_semantic": "deny_on_first_deny"}}))
    put(t, "token.json", json.dumps({"subject": dict(subj, properties={"token": "v4.local.AAAA"}),
                                     "action": act, "resource": res}))
    # Case 7: `__expr` in context must be refused the same way everywhere.
    put(t, "expr-context.json", json.dumps({"subject": subj, "action": act, "resource": res,
                                            "context": {"x": {"__expr": "1 + 1"}, "e": {"__entity": subj}}}))
    # Subjects that are not objects (#12: a string subject with a token panicked).
    for name, s in [("string", "alice"), ("array", [subj]), ("number", 1), ("null", None)]:
        put(t, "subject-%s.json" % name, json.dumps({"subject": s, "action": act, "resource": res}))
    put(t, "subject-string-batch.json", json.dumps({"evaluations": [{"subject": "x", "action": act, "resource": res}]}))
    # Case 8: a 400 KB string against the fixed state's 8,000-character `like` pattern.
    near = ("a" * 7999 + "b") * 50
    put(t, "big-like-400k.json", json.dumps({"subject": subj, "action": act, "resource": res, "context": {"s": near}}))


if __name__ == "__main__":
    policies()
    schemas()
    entities()
    authzen()
