// Command dtooracle renders Go templates with the real text/template package, for differential
// tests of deploy_to_ollama's Python engine. It reads a JSON array of cases on stdin and writes
// a JSON array of results on stdout.
//
// Case kinds:
//   - "generic": execute "template" on "data" with Option("missingkey=zero") and Ollama's funcs.
//   - "ollama": build the /api/chat prompt from Ollama-API-shaped messages the way Ollama's
//     server does (our own re-implementation of template/template.go and server/prompt.go,
//     written against the standard library only).
//   - "capabilities": what Ollama derives capabilities from (Vars, thinking tags), as JSON.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/template"
	"time"
)

type request struct {
	Kind     string          `json:"kind"`
	Template string          `json:"template"`
	Data     json.RawMessage `json:"data"`
	Messages []Message       `json:"messages"`
	Tools    *[]Tool         `json:"tools"`
	System   string          `json:"system"`
	Think    *bool           `json:"think"`
	// ThinkLevel is a string think ("high", "medium", "low"): api.ThinkValue with a string.
	ThinkLevel string `json:"think_level"`
	// MergeTools: collate joins consecutive tool results too (Ollama up to v0.9.5).
	MergeTools bool `json:"merge_tools"`
	// UnsetThinkOff: a request without think stays think false even for a TEMPLATE with
	// thinking tags (Ollama before v0.12.4; server/routes.go turns it on since).
	UnsetThinkOff bool `json:"unset_think_off"`
	// Today pins time.Now()'s date for currentDate/yesterdayDate ("2006-01-02"; empty: the
	// clock), so a test renders a TEMPLATE on another day than today.
	Today string `json:"today"`
	// NoDateFuncs: a server before v0.11.0, whose template functions lack currentDate and
	// yesterdayDate (template.go gained them with gpt-oss).
	NoDateFuncs bool `json:"no_date_funcs"`
	// Server: the Ollama release whose template values to model ("0.9.3"; empty: the newest):
	// fields and functions it lacks are missing as they are there (releases.go).
	Server string `json:"server"`
}

// pinnedToday is the request's Today, read by now().
var pinnedToday time.Time

func now() time.Time {
	if !pinnedToday.IsZero() {
		return pinnedToday
	}
	return time.Now()
}

// funcsFor is Ollama's function map, without the functions an older server lacks: the date
// functions before v0.11.0, toTypeScriptType before v0.11.3.
func funcsFor(req request) template.FuncMap {
	older := template.FuncMap{}
	for name, fn := range funcs {
		if !has(req.Server, name) {
			continue
		}
		if req.NoDateFuncs && name == "toTypeScriptType" {
			continue
		}
		if req.NoDateFuncs && (name == "currentDate" || name == "yesterdayDate") {
			continue
		}
		older[name] = fn
	}
	return older
}

type result struct {
	Output     []byte `json:"output"` // base64 in JSON: keeps invalid UTF-8 byte-exact
	Error      string `json:"error,omitempty"`
	ParseError string `json:"parse_error,omitempty"`
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		panic(err)
	}
	var reqs []request
	if err := json.Unmarshal(raw, &reqs); err != nil {
		panic(err)
	}
	results := make([]result, len(reqs))
	for i, req := range reqs {
		results[i] = run(req)
	}
	out, err := json.Marshal(results)
	if err != nil {
		panic(err)
	}
	os.Stdout.Write(out)
}

func run(req request) (res result) {
	defer func() {
		if r := recover(); r != nil {
			res = result{Error: fmt.Sprintf("panic: %v", r)}
		}
	}()
	pinnedToday = time.Time{}
	if req.Today != "" {
		day, err := time.ParseInLocation("2006-01-02", req.Today, time.Local)
		if err != nil {
			return result{Error: "bad today: " + err.Error()}
		}
		pinnedToday = day
	}
	switch req.Kind {
	case "generic":
		return runGeneric(req)
	case "ollama":
		return runOllama(req)
	case "capabilities":
		return runCapabilities(req)
	case "tooltag":
		return runToolTag(req)
	}
	return result{Error: "unknown kind " + req.Kind}
}

// ---- generic -------------------------------------------------------------------------------

func decodeData(raw json.RawMessage) (any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return convertNumbers(v), nil
}

// convertNumbers turns json.Number into int (no fraction/exponent) or float64, matching the
// Python model where int stays int and float stays float64.
func convertNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		s := x.String()
		if !strings.ContainsAny(s, ".eE") {
			if n, err := x.Int64(); err == nil {
				return int(n)
			}
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = convertNumbers(x[i])
		}
		return x
	case map[string]any:
		for k := range x {
			x[k] = convertNumbers(x[k])
		}
		return x
	}
	return v
}

func runGeneric(req request) result {
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcsFor(req)).Parse(req.Template)
	if err != nil {
		return result{ParseError: err.Error()}
	}
	data, err := decodeData(req.Data)
	if err != nil {
		return result{Error: "bad data: " + err.Error()}
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, data); err != nil {
		return result{Output: b.Bytes(), Error: err.Error()}
	}
	return result{Output: b.Bytes()}
}

// ---- Ollama-shaped types (field names, JSON tags and String methods as Ollama's) ----------

type Message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	Thinking   string     `json:"thinking,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolName   string     `json:"tool_name,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type ToolCall struct {
	ID       string           `json:"id,omitempty"`
	Function ToolCallFunction `json:"function"`
}

type ToolCallFunction struct {
	Index     int             `json:"index"`
	Name      string          `json:"name"`
	Arguments *map[string]any `json:"arguments"`
}

type Tool struct {
	Type     string       `json:"type"`
	Items    any          `json:"items,omitempty"`
	Function ToolFunction `json:"function"`
}

type ToolFunction struct {
	Name        string                 `json:"name"`
	Description string                 `json:"description,omitempty"`
	Parameters  ToolFunctionParameters `json:"parameters"`
}

type ToolFunctionParameters struct {
	Type       string             `json:"type"`
	Defs       any                `json:"$defs,omitempty"`
	Items      any                `json:"items,omitempty"`
	Required   []string           `json:"required,omitempty"`
	Properties *ToolPropertiesMap `json:"properties"`
}

type PropertyType []string

func (pt *PropertyType) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*pt = []string{s}
		return nil
	}
	var a []string
	if err := json.Unmarshal(data, &a); err != nil {
		return err
	}
	*pt = a
	return nil
}

func (pt PropertyType) MarshalJSON() ([]byte, error) {
	if len(pt) == 1 {
		return json.Marshal(pt[0])
	}
	return json.Marshal([]string(pt))
}

func (pt PropertyType) String() string {
	if len(pt) == 0 {
		return ""
	}
	if len(pt) == 1 {
		return pt[0]
	}
	return fmt.Sprintf("%v", []string(pt))
}

// ToolPropertiesMap keeps JSON object order, like Ollama's ordered map.
type ToolPropertiesMap struct {
	keys   []string
	values map[string]ToolProperty
}

func (t *ToolPropertiesMap) UnmarshalJSON(data []byte) error {
	t.values = map[string]ToolProperty{}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil
	}
	for dec.More() {
		keyTok, err := dec.Token()
		if err != nil {
			return err
		}
		key := keyTok.(string)
		var prop ToolProperty
		if err := dec.Decode(&prop); err != nil {
			return err
		}
		if _, seen := t.values[key]; !seen {
			t.keys = append(t.keys, key)
		}
		t.values[key] = prop
	}
	_, err = dec.Token()
	return err
}

func (t ToolPropertiesMap) MarshalJSON() ([]byte, error) {
	if t.values == nil {
		return []byte("null"), nil
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range t.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		vb, err := json.Marshal(t.values[k])
		if err != nil {
			return nil, err
		}
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func (t *ToolPropertiesMap) ToMap() map[string]ToolProperty {
	if t == nil || t.values == nil {
		return nil
	}
	m := make(map[string]ToolProperty, len(t.values))
	for k, v := range t.values {
		m[k] = v
	}
	return m
}

type ToolProperty struct {
	AnyOf       []ToolProperty     `json:"anyOf,omitempty"`
	Type        PropertyType       `json:"type,omitempty"`
	Items       any                `json:"items,omitempty"`
	Description string             `json:"description,omitempty"`
	Enum        []any              `json:"enum,omitempty"`
	Properties  *ToolPropertiesMap `json:"properties,omitempty"`
	Required    []string           `json:"required,omitempty"`
}

func (tp ToolProperty) ToTypeScriptType() string {
	if len(tp.AnyOf) > 0 {
		var types []string
		for _, a := range tp.AnyOf {
			types = append(types, a.ToTypeScriptType())
		}
		return strings.Join(types, " | ")
	}
	if len(tp.Type) == 0 {
		return "any"
	}
	var types []string
	for _, t := range tp.Type {
		types = append(types, tsType(t))
	}
	return strings.Join(types, " | ")
}

func tsType(t string) string {
	switch t {
	case "string":
		return "string"
	case "number", "integer":
		return "number"
	case "boolean":
		return "boolean"
	case "array":
		return "any[]"
	case "object":
		return "Record<string, any>"
	case "null":
		return "null"
	}
	return "any"
}

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	"currentDate": func(args ...string) string {
		return now().Format("2006-01-02")
	},
	"yesterdayDate": func(args ...string) string {
		return now().AddDate(0, 0, -1).Format("2006-01-02")
	},
	"toTypeScriptType": func(v any) string {
		if p, ok := v.(ToolProperty); ok {
			return p.ToTypeScriptType()
		}
		if p, ok := v.(*ToolProperty); ok && p != nil {
			return p.ToTypeScriptType()
		}
		return "any"
	},
}

// ---- template-facing views -----------------------------------------------------------------

type tmplTools []tmplTool

func (t tmplTools) String() string { b, _ := json.Marshal(t); return string(b) }

type tmplArgs map[string]any

func (t tmplArgs) String() string {
	if t == nil {
		return "{}"
	}
	b, _ := json.Marshal(t)
	return string(b)
}

type tmplProps map[string]ToolProperty

func (t tmplProps) String() string {
	if t == nil {
		return "{}"
	}
	b, _ := json.Marshal(t)
	return string(b)
}

type tmplTool struct {
	Type     string       `json:"type"`
	Items    any          `json:"items,omitempty"`
	Function tmplToolFunc `json:"function"`
}

func (t tmplTool) String() string { b, _ := json.Marshal(t); return string(b) }

type tmplToolFunc struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Parameters  tmplToolParams `json:"parameters"`
}

type tmplToolParams struct {
	Type       string    `json:"type"`
	Defs       any       `json:"$defs,omitempty"`
	Items      any       `json:"items,omitempty"`
	Required   []string  `json:"required,omitempty"`
	Properties tmplProps `json:"properties"`
}

type tmplToolCall struct {
	ID       string
	Function tmplToolCallFunc
}

type tmplToolCallFunc struct {
	Index     int
	Name      string
	Arguments tmplArgs
}

type tmplMessage struct {
	Role       string
	Content    string
	Thinking   string
	Images     [][]byte
	ToolCalls  []tmplToolCall
	ToolName   string
	ToolCallID string
}

func toolsView(tools *[]Tool) tmplTools {
	if tools == nil {
		return nil
	}
	out := make(tmplTools, len(*tools))
	for i, t := range *tools {
		out[i] = tmplTool{Type: t.Type, Items: t.Items, Function: tmplToolFunc{
			Name: t.Function.Name, Description: t.Function.Description,
			Parameters: tmplToolParams{
				Type: t.Function.Parameters.Type, Defs: t.Function.Parameters.Defs,
				Items: t.Function.Parameters.Items, Required: t.Function.Parameters.Required,
				Properties: tmplProps(t.Function.Parameters.Properties.ToMap()),
			},
		}}
	}
	return out
}

func messagesView(msgs []*Message) []*tmplMessage {
	out := make([]*tmplMessage, len(msgs))
	for i, m := range msgs {
		var calls []tmplToolCall
		for _, c := range m.ToolCalls {
			var args tmplArgs
			if c.Function.Arguments != nil {
				args = tmplArgs(*c.Function.Arguments)
			}
			calls = append(calls, tmplToolCall{ID: c.ID, Function: tmplToolCallFunc{
				Index: c.Function.Index, Name: c.Function.Name, Arguments: args,
			}})
		}
		out[i] = &tmplMessage{Role: m.Role, Content: m.Content, Thinking: m.Thinking,
			ToolCalls: calls, ToolName: m.ToolName, ToolCallID: m.ToolCallID}
	}
	return out
}
