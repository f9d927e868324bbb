package main

import "strings"

// The --help table: option names in a column helpName wide, help after
// them wrapped at helpWidth columns. A longer name has its help on the
// next line.
const (
	helpName  = 24
	helpWidth = 79
)

// helpRow is option o's row of the --help table.
func helpRow(o option) string {
	indent := strings.Repeat(" ", 2+helpName+2)
	row := "  " + optionSyntax(o)
	if len(row) > 2+helpName {
		row += "\n" + indent
	} else {
		row += strings.Repeat(" ", len(indent)-len(row))
	}
	line := len(indent)
	for i, word := range strings.Fields(o.help) {
		switch {
		case i > 0 && line+1+len(word) > helpWidth:
			row += "\n" + indent
			line = len(indent)
		case i > 0:
			row += " "
			line++
		}
		row += word
		line += len(word)
	}
	return row
}

// optionSyntax shows how option o is written: name, name=... for a value,
// or name=A|B for one of a few.
func optionSyntax(o option) string {
	switch {
	case o.values == nil:
		return o.name + "=..."
	case o.values[0] != "":
		return o.name + "=" + strings.Join(o.values, "|")
	}
	return o.name
}
