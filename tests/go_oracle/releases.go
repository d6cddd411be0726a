package main

import (
	"fmt"
	"strings"
)

// Template values Ollama releases gained, read from the release tags' api/types.go and
// template/template.go: Message.ToolName arrived in v0.9.6, Message.ToolCallID and ToolCall.ID
// in v0.12.10, the ThinkLevel key and currentDate in v0.11.0, toTypeScriptType in v0.11.3,
// yesterdayDate in v0.13.3. A request's "server" names the release to model (empty: newest).
var since = map[string][3]int{
	"ToolName":         {0, 9, 6},
	"ToolCallID":       {0, 12, 10},
	"ID":               {0, 12, 10},
	"ThinkLevel":       {0, 11, 0},
	"currentDate":      {0, 11, 0},
	"toTypeScriptType": {0, 11, 3},
	"yesterdayDate":    {0, 13, 3},
}

// has says whether release server (empty: the newest) has the template value name.
func has(server, name string) bool {
	if server == "" {
		return true
	}
	var v [3]int
	if _, err := fmt.Sscanf(strings.TrimPrefix(server, "v"), "%d.%d.%d", &v[0], &v[1], &v[2]); err != nil {
		return true
	}
	want := since[name]
	for i := range v {
		if v[i] != want[i] {
			return v[i] > want[i]
		}
	}
	return true
}

// Message and tool-call types of older releases: a field they lack is Go's exec error.
type callNoID struct {
	Function tmplToolCallFunc
}

type messageNoIDs struct {
	Role      string
	Content   string
	Thinking  string
	Images    [][]byte
	ToolCalls []callNoID
	ToolName  string
}

type messageNoToolName struct {
	Role      string
	Content   string
	Thinking  string
	Images    [][]byte
	ToolCalls []callNoID
}

// messagesFor is messagesView with the fields release server has.
func messagesFor(server string, msgs []*Message) any {
	view := messagesView(msgs)
	if has(server, "ID") {
		return view
	}
	calls := func(m *tmplMessage) []callNoID {
		var out []callNoID
		for _, c := range m.ToolCalls {
			out = append(out, callNoID{Function: c.Function})
		}
		return out
	}
	if !has(server, "ToolName") {
		out := make([]*messageNoToolName, len(view))
		for i, m := range view {
			out[i] = &messageNoToolName{Role: m.Role, Content: m.Content, Thinking: m.Thinking,
				Images: m.Images, ToolCalls: calls(m)}
		}
		return out
	}
	out := make([]*messageNoIDs, len(view))
	for i, m := range view {
		out[i] = &messageNoIDs{Role: m.Role, Content: m.Content, Thinking: m.Thinking,
			Images: m.Images, ToolCalls: calls(m), ToolName: m.ToolName}
	}
	return out
}
