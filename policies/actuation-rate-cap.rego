# METADATA
# title: A cap on actuations per hour per target
# description: >-
#   An actuating action runs at most maxPerHour times per hour on one target (the caller
#   counts the target's actuations of the last hour into recentActuations). At admission,
#   every such action of an AutomationIntent must declare a rate limit within the cap.
# custom:
#   parameters:
#     maxPerHour: most actuations of one target per hour (default 4)
#     actionTypes: action types that actuate (default [mqtt])
package aios.library["actuation-rate-cap"]

import rego.v1

default configured := {}

configured := data.aios.params

params := object.union({"maxPerHour": 4, "actionTypes": ["mqtt"]}, configured)

violation contains msg if {
	input.kind == "Action"
	input.action.type in params.actionTypes
	input.recentActuations >= params.maxPerHour
	msg := sprintf("target %q was actuated %d times in the last hour (cap %d)", [
		input.action.target, input.recentActuations, params.maxPerHour,
	])
}

violation contains msg if {
	input.kind == "AutomationIntent"
	some action in input.object.spec.actions
	action.type in params.actionTypes
	not within_cap(action)
	msg := sprintf("action %q needs a rate limit of at most %d per hour", [action.name, params.maxPerHour])
}

within_cap(action) if action.rateLimit.perHour <= params.maxPerHour
