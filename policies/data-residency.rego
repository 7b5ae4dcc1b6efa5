# METADATA
# title: Personal data stays at its site
# description: >-
#   An AutomationIntent with personal data names its site, reads only that site's gateways
#   and topics, and sends actions only to targets allowed for that site; an EdgeGateway
#   that does not anonymise forwards only to its own site's topics. At run time, an action
#   of an intent with personal data reaches only its site's targets.
# custom:
#   parameters:
#     siteLabel: label of an EdgeGateway naming its site (default aios.dev/site)
#     siteTopics: >-
#       map of site to topic patterns its data may flow to; a site not listed may use
#       aios.<site>.*
#     siteTargets: >-
#       map of site to action target patterns that keep data at the site; a site not
#       listed may only raise alerts
package aios.library["data-residency"]

import rego.v1

default configured := {}

configured := data.aios.params

params := object.union({"siteLabel": "aios.dev/site", "siteTopics": {}, "siteTargets": {}}, configured)

topic_at_site(site, topic) if {
	some pattern in object.get(params.siteTopics, site, [sprintf("aios.%s.*", [site])])
	glob.match(pattern, null, topic)
}

target_at_site(_, action) if action.type == "alert"

target_at_site(site, action) if {
	action.type == "kafka"
	topic_at_site(site, action.target)
}

target_at_site(site, action) if {
	some pattern in object.get(params.siteTargets, site, [])
	glob.match(pattern, null, action.target)
}

intent_spec := input.object.spec if input.kind == "AutomationIntent"

personal if intent_spec.dataPolicy.personalData == true

site := name if {
	name := intent_spec.dataPolicy.site
	is_string(name)
	name != ""
}

violation contains "personal data needs dataPolicy.site: the site it must stay at" if {
	personal
	not site
}

violation contains msg if {
	personal
	some source in intent_spec.sources
	source.edgeGatewaySelector
	object.get(source.edgeGatewaySelector, ["matchLabels", params.siteLabel], null) != site
	msg := sprintf("source %q must select gateways of site %q (label %s)", [source.name, site, params.siteLabel])
}

violation contains msg if {
	personal
	some source in intent_spec.sources
	not topic_at_site(site, source.kafkaTopic)
	msg := sprintf("source %q reads topic %q outside site %q", [source.name, source.kafkaTopic, site])
}

violation contains msg if {
	personal
	some action in intent_spec.actions
	not target_at_site(site, action)
	msg := sprintf("action %q would send personal data of site %q to %q", [action.name, site, action.target])
}

violation contains msg if {
	input.kind == "EdgeGateway"
	spec := input.object.spec
	not anonymised(spec)
	not topic_at_site(spec.site, spec.sink.kafkaTopic)
	msg := sprintf("gateway of site %q does not anonymise, so it may only forward to its site's topics, not %q", [
		spec.site, spec.sink.kafkaTopic,
	])
}

anonymised(spec) if {
	some step in spec.filters
	step.anonymise
}

violation contains msg if {
	input.kind == "Action"
	input.intent.dataPolicy.personalData == true
	action_site := object.get(input.intent.dataPolicy, "site", "")
	not target_at_site(action_site, input.action)
	msg := sprintf("action %q would send personal data of site %q to %q", [
		input.action.name, action_site, input.action.target,
	])
}
