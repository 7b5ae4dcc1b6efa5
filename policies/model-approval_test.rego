package aios.library["model-approval"]

import rego.v1

card := {
	"owner": "team-air-quality",
	"intendedUse": "score PM2.5 readings",
	"limitations": "fog",
	"trainingData": "18 months",
	"metrics": {"auc": 0.94},
}

md(spec) := {"kind": "ModelDeployment", "operation": "CREATE", "object": {"spec": object.union(
	{"model": {"name": "pm25-anomaly", "version": "1"}, "approval": {"required": true}},
	spec,
)}}

test_complete_card_with_approval_passes if {
	count(violation) == 0 with input as md({"modelCard": card})
}

test_missing_card if {
	violation == {"model pm25-anomaly 1 has no model card"} with input as md({})
}

test_incomplete_card_names_the_fields if {
	violation == {"model card of pm25-anomaly 1 is incomplete: missing limitations, metrics"} with input as md({"modelCard": object.union(
		object.remove(card, ["limitations", "metrics"]),
		{"metrics": {}},
	)})
}

test_approval_must_be_required if {
	violation == {"promotion of model pm25-anomaly 1 must wait for a recorded human approval"} with input as md({"modelCard": card, "approval": {"required": false}})
}

test_promotion_needs_a_recorded_approver if {
	promote := object.union(md({"modelCard": card}), {"operation": "PROMOTE", "approver": null})
	violation == {"model pm25-anomaly 1 cannot be promoted: no approval recorded"} with input as promote
	count(violation) == 0 with input as object.union(promote, {"approver": "lead@city"})
}

test_parameters_choose_the_card_fields if {
	count(violation) == 0 with input as md({"modelCard": {"owner": "x"}})
		with data.aios.params as {"requiredCardFields": ["owner"]}
}
