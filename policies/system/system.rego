# The dispatcher every caller queries: which Policies apply to an input and what they
# decide. The operator writes each Policy's scope and enforcement at
# data.aios_index.registry[ns][name], and indexes it by kind at
# data.aios_index.scopes[kind][ns][name] (so a decision looks at the Policies of its
# input's kind only). A Policy of inline Rego has its module at data.aios.policies[ns][name];
# a Policy of the library names its module in the registry (`library`) and has its
# parameters at data.aios_index.parameters[ns][name]: loading it writes data only, which
# OPA does not recompile for. The data is not under data.aios, where the modules are: OPA
# reads each rule's path on every data write, and copies what is beneath a path the write
# changes. Callers only ever query data.aios.system.decision (admission, runtime actions),
# .max_retention_days, .audit and .look_back.
#
# A policy module exposes `violation` (a set of messages) and, optionally,
# `max_retention_days` (a number); a library module reads its parameters at
# data.aios.params.
package aios.system

import rego.v1

# Labels of what is under review: the object's at admission and audit, the intent's for a
# runtime action.
labels_of(review) := object.get(review, ["intent", "labels"], {}) if review.kind == "Action"

labels_of(review) := object.get(review, ["object", "metadata", "labels"], {}) if review.kind != "Action"

# Whether the scope of Policy ns/name covers the review: one Policy's registry entry, so an
# audit of R reviews costs O(R), not O(R × the Policies of their kind).
covers(ns, name, review) if {
	meta := data.aios_index.registry[ns][name]
	review.kind in meta.kinds
	namespace_in_scope(meta.namespaces, review.namespace)
	selected(object.get(meta, "labelSelector", {}), labels_of(review))
}

# [namespace, name] of every Policy whose scope covers the input.
applicable contains [ns, name] if {
	some ns, name
	data.aios_index.scopes[input.kind][ns][name]
	covers(ns, name, input)
}

namespace_in_scope(patterns, namespace) if {
	some pattern in patterns
	glob.match(pattern, null, namespace)
}

selected(selector, labels) if {
	every key, value in object.get(selector, "matchLabels", {}) {
		labels[key] == value
	}
}

# The Policy's findings about the input.
violations(ns, name) := data.aios.policies[ns][name].violation if not data.aios_index.registry[ns][name].library

violations(ns, name) := found if {
	module := data.aios_index.registry[ns][name].library
	found := data.aios.library[module].violation with data.aios.params as data.aios_index.parameters[ns][name]
}

# The Policy's retention cap for the input (undefined: none).
retention_days(ns, name) := data.aios.policies[ns][name].max_retention_days if not data.aios_index.registry[ns][name].library

retention_days(ns, name) := days if {
	module := data.aios_index.registry[ns][name].library
	days := data.aios.library[module].max_retention_days with data.aios.params as data.aios_index.parameters[ns][name]
}

findings contains finding if {
	some [ns, name] in applicable
	some message in violations(ns, name)
	finding := {
		"policy": concat("/", [ns, name]),
		"enforcement": data.aios_index.registry[ns][name].enforcement,
		"message": message,
	}
}

messages(enforcement) := [sprintf("%s: %s", [f.policy, f.message]) |
	some f in findings
	f.enforcement == enforcement
]

decision := {
	"allowed": count(messages("deny")) == 0,
	"denials": messages("deny"),
	"warnings": messages("warn"),
	"dryrun": messages("dryrun"),
	"policies": sort([concat("/", p) | some p in applicable]),
}

# The strictest retention cap of the deny-enforced policies that apply (undefined: none).
max_retention_days := min(caps) if {
	caps := {days |
		some [ns, name] in applicable
		data.aios_index.registry[ns][name].enforcement == "deny"
		days := retention_days(ns, name)
	}
	count(caps) > 0
}

# Periodic audit of existing objects against one policy:
# input {"policy": {"namespace", "name"}, "reviews": [admission-like inputs]} →
# [index into reviews, message] per violation.
audit contains [i, message] if {
	ns := input.policy.namespace
	name := input.policy.name
	some i, review in input.reviews
	covers(ns, name, review)
	some message in violations(ns, name) with input as review
}

# A dry-run policy's look back at past runtime actions (the documents OPA decided on then):
# input {"policy": {"namespace", "name"}, "reviews": [Action inputs]} →
# {"covered": indexes of the reviews in the policy's scope, "violations": audit's pairs}.
look_back := {
	"covered": [i |
		some i, review in input.reviews
		covers(input.policy.namespace, input.policy.name, review)
	],
	"violations": audit,
}
