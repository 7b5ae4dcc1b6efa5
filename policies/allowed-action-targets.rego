# METADATA
# title: Allowed action targets
# description: >-
#   Actions may only reach listed targets: per action type, glob patterns (`*` matches
#   anything, including `/` and `.`). A type with no patterns may reach nothing. Checked on
#   AutomationIntents at admission and on every action at run time.
# custom:
#   parameters:
#     targets: >-
#       map of action type to target patterns, e.g.
#       {"webhook": ["https://alerts.city.example/*"], "mqtt": ["city/*"]}
package aios.library["allowed-action-targets"]

import rego.v1

default configured := {}

configured := data.aios.params

params := object.union({"targets": {}}, configured)

allowed(type, target) if {
	some pattern in object.get(params.targets, type, [])
	glob.match(pattern, null, target)
}

violation contains msg if {
	input.kind == "AutomationIntent"
	some action in input.object.spec.actions
	not allowed(action.type, action.target)
	msg := sprintf("action %q may not reach %s target %q", [action.name, action.type, action.target])
}

violation contains msg if {
	input.kind == "Action"
	not allowed(input.action.type, input.action.target)
	msg := sprintf("action %q may not reach %s target %q", [
		input.action.name, input.action.type, input.action.target,
	])
}
