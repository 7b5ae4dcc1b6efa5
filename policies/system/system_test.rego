package aios.system

import rego.v1

registry := {
	"city": {
		"no-gpu": {
			"enforcement": "deny",
			"kinds": ["ModelDeployment"],
			"namespaces": ["pilot", "lab-*"],
		},
		"tagged": {
			"enforcement": "warn",
			"kinds": ["ModelDeployment", "Action"],
			"namespaces": ["*"],
			"labelSelector": {"matchLabels": {"tier": "critical"}},
		},
		"counted": {"enforcement": "dryrun", "kinds": ["ModelDeployment"], "namespaces": ["pilot"]},
		"retention-30": {"enforcement": "deny", "kinds": ["AutomationIntent"], "namespaces": ["*"]},
		"retention-7-warn": {"enforcement": "warn", "kinds": ["AutomationIntent"], "namespaces": ["*"]},
	},
	"other": {"retention-14": {"enforcement": "deny", "kinds": ["AutomationIntent"], "namespaces": ["other"]}},
}

policies := {
	"city": {
		"no-gpu": {"violation": {"no GPUs here"}},
		"tagged": {"violation": {"critical things are watched"}},
		"counted": {"violation": {"would object"}},
		"retention-30": {"violation": set(), "max_retention_days": 30},
		"retention-7-warn": {"violation": set(), "max_retention_days": 7},
	},
	"other": {"retention-14": {"violation": set(), "max_retention_days": 14}},
}

# The kind index the operator writes beside each registry entry.
index(reg) := {kind: {ns: names |
	some ns, entries in reg
	names := {name: {} | some name, meta in entries; kind in meta.kinds}
} |
	some kind in ["ModelDeployment", "AutomationIntent", "EdgeGateway", "Action"]
}

scopes := index(registry)

md(ns, labels) := {"kind": "ModelDeployment", "namespace": ns, "object": {"metadata": {"labels": labels}}}

test_scope_by_kind_namespace_glob_and_labels if {
	applicable == {["city", "no-gpu"], ["city", "counted"]} with input as md("pilot", {})
		with data.aios_index.registry as registry with data.aios_index.scopes as scopes
	applicable == {["city", "no-gpu"]} with input as md("lab-3", {}) with data.aios_index.registry as registry with data.aios_index.scopes as scopes
	applicable == {["city", "tagged"]} with input as md("prod", {"tier": "critical"})
		with data.aios_index.registry as registry with data.aios_index.scopes as scopes
	count(applicable) == 0 with input as md("prod", {"tier": "low"}) with data.aios_index.registry as registry with data.aios_index.scopes as scopes
}

test_action_labels_come_from_the_intent if {
	action := {"kind": "Action", "namespace": "x", "intent": {"labels": {"tier": "critical"}}}
	applicable == {["city", "tagged"]} with input as action with data.aios_index.registry as registry with data.aios_index.scopes as scopes
}

test_deny_warn_and_dryrun_are_separated if {
	d := decision with input as md("pilot", {"tier": "critical"})
		with data.aios_index.registry as registry with data.aios_index.scopes as scopes
		with data.aios.policies as policies
	d.allowed == false
	d.denials == ["city/no-gpu: no GPUs here"]
	d.warnings == ["city/tagged: critical things are watched"]
	d.dryrun == ["city/counted: would object"]
	d.policies == ["city/counted", "city/no-gpu", "city/tagged"]
}

test_warn_and_dryrun_alone_allow if {
	d := decision with input as md("prod", {"tier": "critical"})
		with data.aios_index.registry as registry with data.aios_index.scopes as scopes
		with data.aios.policies as policies
	d.allowed == true
	d.warnings == ["city/tagged: critical things are watched"]
}

test_no_policy_allows if {
	d := decision with input as md("prod", {}) with data.aios_index.registry as {} with data.aios_index.scopes as {}
	d.allowed == true
	d.policies == []
}

test_retention_cap_is_the_strictest_deny_policy if {
	intent := {"kind": "AutomationIntent", "namespace": "other", "object": {}}
	max_retention_days == 14 with input as intent
		with data.aios_index.registry as registry with data.aios_index.scopes as scopes
		with data.aios.policies as policies
	max_retention_days == 30 with input as object.union(intent, {"namespace": "city"})
		with data.aios_index.registry as registry with data.aios_index.scopes as scopes
		with data.aios.policies as policies
}

test_no_retention_cap_is_undefined if {
	not max_retention_days with input as {"kind": "AutomationIntent", "namespace": "x"}
		with data.aios_index.registry as {} with data.aios_index.scopes as {}
}

test_audit_reports_index_and_message_per_violation if {
	reviews := [md("pilot", {}), md("prod", {}), md("pilot", {"tier": "critical"})]
	audit == {[0, "no GPUs here"], [2, "no GPUs here"]} with input as {
		"policy": {"namespace": "city", "name": "no-gpu"},
		"reviews": reviews,
	}
		with data.aios_index.registry as registry with data.aios_index.scopes as scopes
		with data.aios.policies as policies
}

past_action(labels) := {"kind": "Action", "namespace": "x", "intent": {"labels": labels}}

test_look_back_names_the_covered_actions_and_the_findings_on_them if {
	found := look_back with input as {
		"policy": {"namespace": "city", "name": "tagged"},
		"reviews": [past_action({"tier": "critical"}), past_action({}), past_action({"tier": "critical"})],
	}
		with data.aios_index.registry as registry with data.aios_index.scopes as scopes
		with data.aios.policies as policies
	found.covered == [0, 2]
	found.violations == {[0, "critical things are watched"], [2, "critical things are watched"]}
}

# A library Policy: no module of its own, its module named in the registry, its parameters
# handed to that module.
library_registry := {"city": {
	"mqtt-approved": {"enforcement": "deny", "kinds": ["Action"], "namespaces": ["*"], "library": "actuation-needs-approval"},
	"webhook-approved": {"enforcement": "warn", "kinds": ["Action"], "namespaces": ["*"], "library": "actuation-needs-approval"},
	"retention": {"enforcement": "deny", "kinds": ["AutomationIntent"], "namespaces": ["*"], "library": "personal-data-retention"},
}}

library_scopes := index(library_registry)

library_parameters := {"city": {
	"mqtt-approved": {"actionTypes": ["mqtt"]},
	"webhook-approved": {"actionTypes": ["webhook"]},
	"retention": {"maxDays": 21},
}}

unapproved(type) := {"kind": "Action", "namespace": "x", "action": {"name": "a", "type": type, "target": "t"}}

test_library_policies_decide_with_their_own_parameters if {
	mqtt := decision with input as unapproved("mqtt")
		with data.aios_index.registry as library_registry with data.aios_index.scopes as library_scopes
		with data.aios_index.parameters as library_parameters
	mqtt.denials == ["city/mqtt-approved: mqtt action \"a\" on \"t\" needs a human approval before it runs"]
	mqtt.warnings == []
	webhook := decision with input as unapproved("webhook")
		with data.aios_index.registry as library_registry with data.aios_index.scopes as library_scopes
		with data.aios_index.parameters as library_parameters
	webhook.denials == []
	webhook.warnings == ["city/webhook-approved: webhook action \"a\" on \"t\" needs a human approval before it runs"]
	max_retention_days == 21 with input as {"kind": "AutomationIntent", "namespace": "x", "object": {}}
		with data.aios_index.registry as library_registry with data.aios_index.scopes as library_scopes
		with data.aios_index.parameters as library_parameters
}

test_the_kind_index_finds_a_policy_and_its_registry_entry_decides if {
	# not indexed under its kind: not found (the registry is never walked)
	count(applicable) == 0 with input as md("pilot", {})
		with data.aios_index.registry as registry
		with data.aios_index.scopes as {"Action": scopes.Action}

	# indexed under a kind no longer in its scope (a stale entry): the registry says no
	stale := object.union(scopes, {"EdgeGateway": {"city": {"no-gpu": {}}}})
	count(applicable) == 0 with input as {"kind": "EdgeGateway", "namespace": "pilot", "object": {}}
		with data.aios_index.registry as registry
		with data.aios_index.scopes as stale
}
