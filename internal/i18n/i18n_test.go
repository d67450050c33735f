package i18n

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	cases := []struct {
		header string
		want   Lang
	}{
		{"", En},
		{"ru", Ru},
		{"RU", Ru},
		{"en", En},
		{"ru-RU", Ru},
		{"ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7", Ru},
		{"en-US,en;q=0.9,ru;q=0.8", En},
		{"de-DE,de;q=0.9,ru;q=0.8", Ru},
		{"de, fr;q=0.9", En},
		{"en;q=0.5, ru;q=0.6", Ru},
		{"ru;q=0.6, en;q=0.6", Ru}, // a tie goes to the earlier
		{"ru;q=0", En},
		{"ru;q=0, *;q=0.1", En},
		{"*", En},
		{"ru;q=abc, en;q=0.1", En},
		{"ru;q=2", En},
		{" ru-ru ; q=0.9 , en ; q=0.5 ", Ru},
		{"uk, ru;q=0.5", Ru},
		{";;;,,,", En},
		{"ru;level=1", Ru},
	}
	for _, c := range cases {
		if got := Parse(c.header); got != c.want {
			t.Errorf("Parse(%q) = %q, want %q", c.header, got, c.want)
		}
	}
}

func TestT(t *testing.T) {
	cases := []struct {
		name string
		lang Lang
		key  string
		args []any
		want string
	}{
		{"english", En, "explain.auth_rejected", nil, en["explain.auth_rejected"]},
		{"russian", Ru, "explain.auth_rejected", nil, ru["explain.auth_rejected"]},
		{"arguments", En, "explain.timeout.step", []any{"AUTH"}, "The server stopped answering during AUTH."},
		{"arguments in russian", Ru, "explain.timeout.step", []any{"AUTH"}, "Сервер перестал отвечать на этапе AUTH."},
		{"unknown language is english", Lang("de"), "explain.auth_rejected", nil, en["explain.auth_rejected"]},
		{"missing key is the key", Ru, "no.such.key", nil, "no.such.key"},
	}
	for _, c := range cases {
		if got := T(c.lang, c.key, c.args...); got != c.want {
			t.Errorf("%s: T(%q, %q) = %q, want %q", c.name, c.lang, c.key, got, c.want)
		}
	}
}

func TestLookupFallsBackToEnglish(t *testing.T) {
	cats := map[Lang]map[string]string{
		En: {"both": "both %s", "only.en": "only English %s"},
		Ru: {"both": "оба %s"},
	}
	cases := []struct {
		lang Lang
		key  string
		want string
	}{
		{Ru, "both", "оба x"},
		{Ru, "only.en", "only English x"},
		{En, "only.en", "only English x"},
		{Ru, "nowhere", "nowhere"},
	}
	for _, c := range cases {
		if got := lookup(cats, c.lang, c.key, "x"); got != c.want {
			t.Errorf("lookup(%q, %q) = %q, want %q", c.lang, c.key, got, c.want)
		}
	}
}

func TestCataloguesHaveTheSameKeys(t *testing.T) {
	for _, lang := range Supported() {
		cat := catalogues[lang]
		for key := range en {
			if _, ok := cat[key]; !ok {
				t.Errorf("%s lacks %q", lang, key)
			}
		}
		for key := range cat {
			if _, ok := en[key]; !ok {
				t.Errorf("%s has %q, which English lacks", lang, key)
			}
		}
	}
}

func TestCataloguesTakeTheSameArguments(t *testing.T) {
	for _, lang := range Supported() {
		for key, format := range catalogues[lang] {
			want, err := verbs(en[key])
			if err != nil {
				t.Errorf("en %q: %v", key, err)
				continue
			}
			got, err := verbs(format)
			if err != nil {
				t.Errorf("%s %q: %v", lang, key, err)
				continue
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s %q takes %v, want %v (as in English)", lang, key, got, want)
			}
		}
	}
}

func TestCataloguesAreClean(t *testing.T) {
	for _, lang := range Supported() {
		for key, format := range catalogues[lang] {
			if strings.TrimSpace(format) == "" {
				t.Errorf("%s %q is empty", lang, key)
			}
			if format != strings.TrimSpace(format) {
				t.Errorf("%s %q has leading or trailing space", lang, key)
			}
		}
	}
}

func TestVerbs(t *testing.T) {
	cases := []struct {
		format string
		want   []string
	}{
		{"plain", nil},
		{"100%% sure", nil},
		{"%s and %d", []string{"1:s", "2:d"}},
		{"%[2]s then %[1]s", []string{"1:s", "2:s"}},
		{"%q, %5.2f", []string{"1:q", "2:f"}},
	}
	for _, c := range cases {
		got, err := verbs(c.format)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("verbs(%q) = %v, %v, want %v", c.format, got, err, c.want)
		}
	}
}

// verbs lists the arguments a format takes as "index:verb", sorted by
// index, so that "%[2]s %[1]s" and "%s %s" compare equal.
func verbs(format string) ([]string, error) {
	var out []string
	next := 1
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		i++
		if i < len(format) && format[i] == '%' {
			continue
		}
		for i < len(format) && strings.IndexByte("+-# 0", format[i]) >= 0 {
			i++
		}
		if i < len(format) && format[i] == '[' {
			end := strings.IndexByte(format[i:], ']')
			if end < 0 {
				return nil, errBadFormat(format)
			}
			n, err := strconv.Atoi(format[i+1 : i+end])
			if err != nil {
				return nil, errBadFormat(format)
			}
			next = n
			i += end + 1
		}
		for i < len(format) && (format[i] >= '0' && format[i] <= '9' || format[i] == '.') {
			i++
		}
		if i >= len(format) {
			return nil, errBadFormat(format)
		}
		out = append(out, strconv.Itoa(next)+":"+string(format[i]))
		next++
	}
	slices.Sort(out)
	return out, nil
}

type errBadFormat string

func (e errBadFormat) Error() string { return "malformed format " + strconv.Quote(string(e)) }
