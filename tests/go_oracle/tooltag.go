package main

import (
	"strings"
	"text/template"
	"text/template/parse"
)

// runToolTag reports the tool-call tag Ollama's tool parser derives from a TEMPLATE: the first
// text of the first `if` whose pipeline names .ToolCalls, trimmed and cut at "{"
// (ollama/ollama tools/template.go). Error "no ToolCalls block" when there is none.
func runToolTag(req request) result {
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcsFor(req)).Parse(req.Template)
	if err != nil {
		return result{ParseError: err.Error()}
	}
	block := toolCallsIf(tmpl.Tree.Root.Nodes)
	if block == nil {
		return result{Error: "no ToolCalls block"}
	}
	text := firstText(block.List.Nodes)
	if text == nil {
		return result{Output: []byte{}}
	}
	tag := strings.ReplaceAll(strings.TrimSpace(string(text.Text)), "\r\n", "\n")
	return result{Output: []byte(strings.Split(tag, "{")[0])}
}

func namesToolCalls(n *parse.IfNode) bool {
	for _, cmd := range n.Pipe.Cmds {
		for _, arg := range cmd.Args {
			if f, ok := arg.(*parse.FieldNode); ok {
				for _, id := range f.Ident {
					if id == "ToolCalls" {
						return true
					}
				}
			}
		}
	}
	return false
}

func bodies(b *parse.BranchNode) []*parse.ListNode {
	out := []*parse.ListNode{b.List}
	if b.ElseList != nil {
		out = append(out, b.ElseList)
	}
	return out
}

func toolCallsIf(nodes []parse.Node) *parse.IfNode {
	for _, node := range nodes {
		var lists []*parse.ListNode
		switch n := node.(type) {
		case *parse.IfNode:
			if namesToolCalls(n) {
				return n
			}
			lists = bodies(&n.BranchNode)
		case *parse.RangeNode:
			lists = bodies(&n.BranchNode)
		case *parse.WithNode:
			lists = bodies(&n.BranchNode)
		case *parse.ListNode:
			lists = []*parse.ListNode{n}
		}
		for _, l := range lists {
			if found := toolCallsIf(l.Nodes); found != nil {
				return found
			}
		}
	}
	return nil
}

func firstText(nodes []parse.Node) *parse.TextNode {
	for _, node := range nodes {
		switch n := node.(type) {
		case *parse.TextNode:
			return n
		case *parse.ListNode:
			if t := firstText(n.Nodes); t != nil {
				return t
			}
		case *parse.IfNode:
			return branchText(&n.BranchNode)
		case *parse.RangeNode:
			return branchText(&n.BranchNode)
		case *parse.WithNode:
			return branchText(&n.BranchNode)
		case *parse.ActionNode:
			return nil
		}
	}
	return nil
}

func branchText(b *parse.BranchNode) *parse.TextNode {
	for _, l := range bodies(b) {
		if t := firstText(l.Nodes); t != nil {
			return t
		}
	}
	return nil
}
