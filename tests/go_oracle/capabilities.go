package main

import (
	"encoding/json"
	"slices"
	"strings"
	"text/template"
)

// runCapabilities reports what Ollama reads from a TEMPLATE to derive its capabilities
// (ollama/ollama server/images.go goTemplateCapabilities): the lower-cased Vars, whether .Tools,
// .ToolCalls and .Suffix are among them, and the thinking tags, on Go's own parse tree.
func runCapabilities(req request) result {
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcsFor(req)).Parse(req.Template)
	if err != nil {
		return result{ParseError: err.Error()}
	}
	vars, err := templateVars(tmpl)
	if err != nil {
		return result{Error: err.Error()}
	}
	open, closing := inferTags(tmpl)
	var caps []string
	if slices.Contains(vars, "tools") {
		caps = append(caps, "tools")
	}
	if slices.Contains(vars, "suffix") {
		caps = append(caps, "insert")
	}
	if open != "" && closing != "" {
		caps = append(caps, "thinking")
	}
	roundTrip := slices.Contains(vars, "tools") && slices.Contains(vars, "toolcalls") &&
		(strings.Contains(req.Template, `eq .Role "tool"`) ||
			strings.Contains(req.Template, "tool_response") ||
			strings.Contains(req.Template, "TOOL_RESULTS"))
	out, err := json.Marshal(map[string]any{
		"capabilities": caps, "open": open, "close": closing, "round_trip": roundTrip,
	})
	if err != nil {
		return result{Error: err.Error()}
	}
	return result{Output: out}
}
