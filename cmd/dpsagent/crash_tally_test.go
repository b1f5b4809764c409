package main

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// crashTally counts what the crash runs did, for the log at the end: runs
// per scenario, the kill points hit (by name, the random part of file names
// left out) and the outcomes.
type crashTally struct {
	mu       sync.Mutex
	counts   map[string]int
	steps    map[string]int
	failures int
}

func crashNewTally() *crashTally {
	return &crashTally{counts: map[string]int{}, steps: map[string]int{}}
}

func (c *crashTally) count(what string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[what] += n
}

func (c *crashTally) step(scenario, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.steps[scenario+" @ "+crashStepKind(name)]++
}

func (c *crashTally) failed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures++
}

// crashRandomHex is the random part of blob and temporary file names.
var crashRandomHex = regexp.MustCompile(`[0-9a-f]{16}|-[0-9]+$`)

// crashStepKind is a kill point's name without the random part of file
// names, so runs of different devices compare: store:rename:key-*.blob.
func crashStepKind(name string) string {
	return crashRandomHex.ReplaceAllString(name, "*")
}

func (c *crashTally) failedRuns() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failures
}

func (c *crashTally) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	runs := 0
	for k, n := range c.counts {
		if strings.HasPrefix(k, "runs: ") {
			runs += n
		}
	}
	fmt.Fprintf(&b, "crash tally: %d runs, %d failed\n", runs, c.failures)
	for _, k := range slices.Sorted(maps.Keys(c.counts)) {
		fmt.Fprintf(&b, "  %-58s %4d\n", k, c.counts[k])
	}
	b.WriteString("kill points hit (scenario @ step):\n")
	for _, k := range slices.Sorted(maps.Keys(c.steps)) {
		fmt.Fprintf(&b, "  %-58s %4d\n", k, c.steps[k])
	}
	return b.String()
}
