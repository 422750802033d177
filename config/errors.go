package config

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a config file.
type Problem struct {
	// File is the name given to Parse or the path given to Load.
	File string
	// Line is the 1-based line the problem is on; 0 when it has no single
	// place in the file (a required key that is missing).
	Line int
	// Key is the dotted key concerned ("http.listen"), "" for syntax errors.
	Key string
	// Msg is the complete message; it names the key.
	Msg string
}

// Error formats the problem as "FILE:LINE: MSG", or "FILE: MSG" without a
// line.
func (p Problem) Error() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error is every problem found in one config file, in line order (problems
// without a line last). Parse, Load and Validate return it as a *Error.
type Error struct {
	Problems []Problem
}

// Error joins the problems, one per line.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems as errors, for errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// errorOf sorts problems and wraps them, or returns nil when there are none.
func errorOf(problems []Problem) error {
	if len(problems) == 0 {
		return nil
	}
	slices.SortStableFunc(problems, func(a, b Problem) int {
		// Line 0 (no place in the file) sorts last.
		la, lb := a.Line, b.Line
		if la == 0 {
			la = int(^uint(0) >> 1)
		}
		if lb == 0 {
			lb = int(^uint(0) >> 1)
		}
		return cmp.Or(cmp.Compare(la, lb), cmp.Compare(a.Key, b.Key))
	})
	return &Error{Problems: problems}
}
