package conformance

// Scenarios returns every scenario of the suite, grouped by area (the
// name's first component; see Areas).
func Scenarios() []Scenario {
	var all []Scenario
	for _, group := range [][]Scenario{
		lookupScenarios(), readdirScenarios(), whiteoutScenarios(), writeScenarios(),
		moreCopyUpScenarios(), moreRenameScenarios(), linkScenarios(), xattrScenarios(),
		permScenarios(), specialScenarios(), inoScenarios(), persistScenarios(), errorScenarios(), edgeScenarios(),
		optionScenarios(),
	} {
		all = append(all, group...)
	}
	return all
}
