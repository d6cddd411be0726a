package main

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"
)

// runOllama builds the /api/chat prompt the way Ollama's server does for a Go TEMPLATE.
func runOllama(req request) result {
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcsFor(req)).Parse(req.Template)
	if err != nil {
		return result{ParseError: err.Error()}
	}
	vars, err := templateVars(tmpl)
	if err != nil {
		return result{ParseError: err.Error()}
	}
	if !slices.Contains(vars, "messages") && !slices.Contains(vars, "response") {
		tmpl.Tree.Root.Nodes = append(tmpl.Tree.Root.Nodes, responseAction())
	}

	msgs := req.Messages
	if len(msgs) > 0 && msgs[0].Role != "system" && req.System != "" {
		msgs = append([]Message{{Role: "system", Content: req.System}}, msgs...)
	}
	think := req.Think
	if think == nil && !req.UnsetThinkOff {
		open, closing := inferTags(tmpl)
		if open != "" && closing != "" {
			t := true
			think = &t
		}
	}
	thinkVal, thinkLevel, isSet := false, "", think != nil
	if think != nil && *think {
		thinkVal, thinkLevel = true, "medium"
	}
	if req.ThinkLevel != "" {
		thinkVal, thinkLevel, isSet = true, req.ThinkLevel, true
	}

	system, collated := collate(msgs, req.MergeTools)
	var b bytes.Buffer
	if slices.Contains(vars, "messages") {
		data := map[string]any{
			"System": system, "Messages": messagesFor(req.Server, collated),
			"Tools": toolsView(req.Tools), "Response": "", "Think": thinkVal,
			"ThinkLevel": thinkLevel, "IsThinkSet": isSet,
		}
		if !has(req.Server, "ThinkLevel") {
			delete(data, "ThinkLevel")
		}
		err := tmpl.Execute(&b, data)
		if err != nil {
			return result{Output: b.Bytes(), Error: err.Error()}
		}
		return result{Output: b.Bytes()}
	}
	return legacy(tmpl, collated, thinkVal, thinkLevel, isSet, has(req.Server, "ThinkLevel"))
}

func legacy(tmpl *template.Template, msgs []*Message, think bool, level string, isSet, hasLevel bool) result {
	var b bytes.Buffer
	system, prompt, response := "", "", ""
	data := func() map[string]any {
		d := map[string]any{"System": system, "Prompt": prompt, "Response": response,
			"Think": think, "ThinkLevel": level, "IsThinkSet": isSet}
		if !hasLevel {
			delete(d, "ThinkLevel")
		}
		return d
	}
	flush := func() error {
		if err := tmpl.Execute(&b, data()); err != nil {
			return err
		}
		system, prompt, response = "", "", ""
		return nil
	}
	for _, m := range msgs {
		var err error
		switch m.Role {
		case "system":
			if prompt != "" || response != "" {
				err = flush()
			}
			system = m.Content
		case "user":
			if response != "" {
				err = flush()
			}
			prompt = m.Content
		case "assistant":
			response = m.Content
		}
		if err != nil {
			return result{Error: err.Error()}
		}
	}
	cut := false
	nodes := cutTree(tmpl.Root.Copy(), func(n parse.Node) bool {
		if f, ok := n.(*parse.FieldNode); ok && slices.Contains(f.Ident, "Response") {
			cut = true
			return false
		}
		return cut
	})
	tree := parse.Tree{Root: nodes.(*parse.ListNode)}
	last := template.Must(template.New("").AddParseTree("", &tree))
	if err := last.Execute(&b, data()); err != nil {
		return result{Error: err.Error()}
	}
	return result{Output: b.Bytes()}
}

func responseAction() *parse.ActionNode {
	return &parse.ActionNode{NodeType: parse.NodeAction, Pipe: &parse.PipeNode{
		NodeType: parse.NodePipe,
		Cmds: []*parse.CommandNode{{NodeType: parse.NodeCommand, Args: []parse.Node{
			&parse.FieldNode{NodeType: parse.NodeField, Ident: []string{"Response"}},
		}}},
	}}
}

func collate(msgs []Message, mergeTools bool) (string, []*Message) {
	var system []string
	var out []*Message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		joins := msgs[i].Role != "tool" || mergeTools
		if len(out) > 0 && out[len(out)-1].Role == msgs[i].Role && joins {
			out[len(out)-1].Content += "\n\n" + msgs[i].Content
		} else {
			out = append(out, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), out
}

func templateVars(t *template.Template) ([]string, error) {
	var names []string
	for _, tt := range t.Templates() {
		for _, n := range tt.Root.Nodes {
			found, err := idents(n)
			if err != nil {
				return nil, err
			}
			names = append(names, found...)
		}
	}
	var lower []string
	for _, n := range names {
		lower = append(lower, strings.ToLower(n))
	}
	return lower, nil
}

func idents(n parse.Node) ([]string, error) {
	var out []string
	add := func(m parse.Node) error {
		if m == nil {
			return nil
		}
		found, err := idents(m)
		out = append(out, found...)
		return err
	}
	switch x := n.(type) {
	case *parse.ListNode:
		for _, c := range x.Nodes {
			if err := add(c); err != nil {
				return out, err
			}
		}
	case *parse.TemplateNode:
		if x.Pipe == nil {
			return nil, errors.New("undefined template specified")
		}
		return idents(x.Pipe)
	case *parse.ActionNode:
		return idents(x.Pipe)
	case *parse.IfNode:
		return branchIdents(&x.BranchNode)
	case *parse.RangeNode:
		return branchIdents(&x.BranchNode)
	case *parse.WithNode:
		return branchIdents(&x.BranchNode)
	case *parse.PipeNode:
		for _, c := range x.Cmds {
			for _, a := range c.Args {
				if err := add(a); err != nil {
					return out, err
				}
			}
		}
	case *parse.FieldNode:
		return x.Ident, nil
	case *parse.VariableNode:
		return x.Ident, nil
	}
	return out, nil
}

func branchIdents(b *parse.BranchNode) ([]string, error) {
	out, err := idents(b.Pipe)
	if err != nil {
		return out, err
	}
	for _, l := range []*parse.ListNode{b.List, b.ElseList} {
		if l != nil {
			found, err := idents(l)
			if err != nil {
				return out, err
			}
			out = append(out, found...)
		}
	}
	return out, nil
}

// cutTree deletes every node the predicate selects, walking like Ollama's deleteNode.
func cutTree(n parse.Node, fn func(parse.Node) bool) parse.Node {
	var walk func(n parse.Node) parse.Node
	walk = func(n parse.Node) parse.Node {
		if fn(n) {
			return nil
		}
		switch t := n.(type) {
		case *parse.ListNode:
			var kept []parse.Node
			for _, c := range t.Nodes {
				if m := walk(c); m != nil {
					kept = append(kept, m)
				}
			}
			t.Nodes = kept
			return t
		case *parse.IfNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.WithNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.RangeNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.BranchNode:
			t.List = walk(t.List).(*parse.ListNode)
			if t.ElseList != nil {
				t.ElseList = walk(t.ElseList).(*parse.ListNode)
			}
		case *parse.ActionNode:
			m := walk(t.Pipe)
			if m == nil {
				return nil
			}
			t.Pipe = m.(*parse.PipeNode)
		case *parse.PipeNode:
			var cmds []*parse.CommandNode
			for _, c := range t.Cmds {
				var args []parse.Node
				for _, a := range c.Args {
					if m := walk(a); m != nil {
						args = append(args, m)
					}
				}
				if len(args) == 0 {
					return nil
				}
				c.Args = args
				cmds = append(cmds, c)
			}
			if len(cmds) == 0 {
				return nil
			}
			t.Cmds = cmds
		}
		return n
	}
	return walk(n)
}

// inferTags finds the text around .Thinking inside a range over .Messages (Ollama's heuristic
// for the thinking capability, which turns think on when a request leaves it unset).
func inferTags(t *template.Template) (string, string) {
	var ancestors []parse.Node
	open, closing := "", ""
	var visit func(n parse.Node)
	visit = func(n parse.Node) {
		if n == nil {
			return
		}
		ancestors = append(ancestors, n)
		defer func() { ancestors = ancestors[:len(ancestors)-1] }()
		if f, ok := n.(*parse.FieldNode); ok && len(f.Ident) > 0 && f.Ident[0] == "Thinking" {
			var rng *parse.RangeNode
			for i := len(ancestors) - 1; i >= 0; i-- {
				if r, ok := ancestors[i].(*parse.RangeNode); ok {
					rng = r
					break
				}
			}
			if rng != nil && rangeOverMessages(rng) {
				for i := len(ancestors) - 1; i >= 0; i-- {
					if l, ok := ancestors[i].(*parse.ListNode); ok {
						if tn, ok := l.Nodes[0].(*parse.TextNode); ok {
							open = strings.TrimSpace(string(tn.Text))
						}
						if tn, ok := l.Nodes[len(l.Nodes)-1].(*parse.TextNode); ok {
							closing = strings.TrimSpace(string(tn.Text))
						}
						break
					}
				}
			}
		}
		switch x := n.(type) {
		case *parse.ListNode:
			for _, c := range x.Nodes {
				visit(c)
			}
		case *parse.IfNode:
			visitBranch(&x.BranchNode, visit)
		case *parse.RangeNode:
			visitBranch(&x.BranchNode, visit)
		case *parse.WithNode:
			visitBranch(&x.BranchNode, visit)
		case *parse.ActionNode:
			visit(x.Pipe)
		case *parse.TemplateNode:
			if x.Pipe != nil {
				visit(x.Pipe)
			}
		case *parse.PipeNode:
			for _, c := range x.Cmds {
				visit(c)
			}
		case *parse.CommandNode:
			for _, a := range x.Args {
				visit(a)
			}
		}
	}
	visit(t.Root)
	return open, closing
}

func visitBranch(b *parse.BranchNode, visit func(parse.Node)) {
	if b.Pipe != nil {
		visit(b.Pipe)
	}
	if b.List != nil {
		visit(b.List)
	}
	if b.ElseList != nil {
		visit(b.ElseList)
	}
}

func rangeOverMessages(r *parse.RangeNode) bool {
	found := false
	var visit func(n parse.Node)
	visit = func(n parse.Node) {
		switch x := n.(type) {
		case *parse.FieldNode:
			if x.Ident[0] == "Messages" {
				found = true
			}
		case *parse.PipeNode:
			for _, c := range x.Cmds {
				visit(c)
			}
		case *parse.CommandNode:
			for _, a := range x.Args {
				visit(a)
			}
		}
	}
	if r.Pipe != nil {
		visit(r.Pipe)
	}
	return found
}
