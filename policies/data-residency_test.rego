package aios.library["data-residency"]

import rego.v1

intent(spec) := {"kind": "AutomationIntent", "object": {"spec": object.union(
	{
		"dataPolicy": {"personalData": true, "site": "district-7"},
		"sources": [{"name": "gw", "edgeGatewaySelector": {"matchLabels": {"aios.dev/site": "district-7"}}}],
		"actions": [{"name": "alert", "type": "alert", "target": "ops"}],
	},
	spec,
)}}

test_site_local_intent_passes if {
	count(violation) == 0 with input as intent({})
}

test_non_personal_intent_is_not_checked if {
	count(violation) == 0 with input as intent({
		"dataPolicy": {"personalData": false},
		"sources": [{"name": "t", "kafkaTopic": "anywhere"}],
	})
}

test_personal_data_needs_a_site if {
	violation == {"personal data needs dataPolicy.site: the site it must stay at"} with input as intent({"dataPolicy": {"personalData": true, "site": null}})
}

test_sources_must_stay_at_the_site if {
	violation == {
		"source \"gw\" must select gateways of site \"district-7\" (label aios.dev/site)",
		"source \"t\" reads topic \"aios.district-9.readings\" outside site \"district-7\"",
	} with input as intent({"sources": [
		{"name": "gw", "edgeGatewaySelector": {"matchLabels": {"aios.dev/site": "district-9"}}},
		{"name": "t", "kafkaTopic": "aios.district-9.readings"},
		{"name": "ok", "kafkaTopic": "aios.district-7.readings"},
	]})
}

test_actions_must_stay_at_the_site if {
	violation == {"action \"hook\" would send personal data of site \"district-7\" to \"https://x.example\""} with input as intent({"actions": [
		{"name": "hook", "type": "webhook", "target": "https://x.example"},
		{"name": "local", "type": "webhook", "target": "https://d7.city.example/a"},
		{"name": "topic", "type": "kafka", "target": "aios.district-7.alerts"},
	]})
		with data.aios.params as {"siteTargets": {"district-7": ["https://d7.city.example/*"]}}
}

test_gateway_without_anonymisation_forwards_only_to_its_site if {
	gateway := {"kind": "EdgeGateway", "object": {"spec": {
		"site": "district-7",
		"filters": [{"validate": {}}],
		"sink": {"kafkaTopic": "city.all-readings"},
	}}}
	count(violation) == 1 with input as gateway
	count(violation) == 0 with input as json.patch(gateway, [{"op": "add", "path": "/object/spec/filters/-", "value": {"anonymise": {}}}])
	count(violation) == 0 with input as gateway with data.aios.params as {"siteTopics": {"district-7": ["city.*"]}}
}

test_runtime_action_of_personal_data_stays_at_the_site if {
	action := {
		"kind": "Action",
		"intent": {"dataPolicy": {"personalData": true, "site": "district-7"}},
		"action": {"name": "hook", "type": "webhook", "target": "https://x.example"},
	}
	count(violation) == 1 with input as action
	count(violation) == 0 with input as json.patch(action, [{"op": "replace", "path": "/intent/dataPolicy/personalData", "value": false}])
}
