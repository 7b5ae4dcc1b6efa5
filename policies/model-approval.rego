# METADATA
# title: A model is approved before promotion
# description: >-
#   A ModelDeployment needs a complete model card and a promotion that waits for a recorded
#   human approval; a promotion (operation PROMOTE, asked by the rollout) runs only with
#   the approver recorded.
# custom:
#   parameters:
#     requiredCardFields: model card fields that must be filled in
#       (default [owner, intendedUse, limitations, trainingData, metrics])
package aios.library["model-approval"]

import rego.v1

default configured := {}

configured := data.aios.params

params := object.union(
	{"requiredCardFields": ["owner", "intendedUse", "limitations", "trainingData", "metrics"]},
	configured,
)

model := sprintf("%s %s", [input.object.spec.model.name, input.object.spec.model.version])

violation contains msg if {
	input.kind == "ModelDeployment"
	not input.object.spec.modelCard
	msg := sprintf("model %s has no model card", [model])
}

violation contains msg if {
	input.kind == "ModelDeployment"
	card := input.object.spec.modelCard
	missing := [field | some field in params.requiredCardFields; empty(object.get(card, field, null))]
	count(missing) > 0
	msg := sprintf("model card of %s is incomplete: missing %s", [model, concat(", ", missing)])
}

violation contains msg if {
	input.kind == "ModelDeployment"
	not object.get(input.object.spec, ["approval", "required"], false)
	msg := sprintf("promotion of model %s must wait for a recorded human approval", [model])
}

violation contains msg if {
	input.kind == "ModelDeployment"
	input.operation == "PROMOTE"
	not recorded_approval
	msg := sprintf("model %s cannot be promoted: no approval recorded", [model])
}

recorded_approval if {
	is_string(input.approver)
	input.approver != ""
}

empty(value) if value == null

empty(value) if value == ""

empty(value) if {
	is_object(value)
	count(value) == 0
}
