// Command ghz-html renders a ghz JSON report as ghz's own HTML report.
//
// ghz writes one output format per run; running it twice would double the load and give
// two different samples. This converts the JSON of the one run with ghz's own printer and
// template, so the HTML holds the same numbers (and per-request details) as the JSON.
//
//	ghz-html report.ghz.json report.ghz.html
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/bojand/ghz/printer"
	"github.com/bojand/ghz/runner"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: ghz-html REPORT.json OUT.html")
		os.Exit(2)
	}
	if err := convert(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "ghz-html:", err)
		os.Exit(1)
	}
}

func convert(in, out string) error {
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var report runner.Report
	if err := json.Unmarshal(data, &report); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if report.Count == 0 {
		return fmt.Errorf("%s: not a ghz report (no requests)", in)
	}
	file, err := os.Create(out)
	if err != nil {
		return err
	}
	p := printer.ReportPrinter{Out: file, Report: &report}
	if err := p.Print("html"); err != nil {
		file.Close()
		return err
	}
	return file.Close()
}
