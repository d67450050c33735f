// Package i18n is mailsync's message catalogue: one map of message keys to
// format strings per language, the choice of a language from an
// Accept-Language header, and T to fetch and format a message.
//
// Invariants:
//   - Every language has every key (a test compares the catalogues), and each
//     translation takes the same arguments as the English text: the same
//     fmt verbs, in the same order or with explicit indexes such as %[2]s.
//   - The catalogues are package-level maps that are never written after
//     initialisation, so T is safe for concurrent use.
//   - English is the default and the fallback: a key missing in a language
//     is looked up in English, and a key missing everywhere is returned as
//     it is, so a typo shows up on the page instead of an empty string.
//
// This package imports only the standard library.
package i18n

import (
	"fmt"
	"strconv"
	"strings"
)

// Lang is a supported language, named by its ISO 639-1 code.
type Lang string

// The supported languages.
const (
	En Lang = "en"
	Ru Lang = "ru"
)

// Default is the language used when a request names none that is supported.
const Default = En

// catalogues maps each supported language to its messages.
var catalogues = map[Lang]map[string]string{
	En: en,
	Ru: ru,
}

// Supported lists the supported languages, the default first.
func Supported() []Lang { return []Lang{En, Ru} }

// Parse picks the best supported language from an Accept-Language header
// (RFC 9110, section 12.5.4), e.g. "ru-RU,ru;q=0.9,en-US;q=0.8". A
// language's primary subtag decides ("ru-RU" is Russian); the highest
// q-value wins and, among equal ones, the earliest; q=0 excludes a language;
// "*" stands for the default. A bare code such as "ru" is a valid header too.
// Anything unparsable counts for nothing; with no supported language left,
// Parse returns [Default].
func Parse(acceptLanguage string) Lang {
	best, bestQ := Default, -1.0
	for item := range strings.SplitSeq(acceptLanguage, ",") {
		tag, params, _ := strings.Cut(item, ";")
		tag = strings.ToLower(strings.TrimSpace(tag))
		q, ok := qValue(params)
		if !ok || q <= 0 {
			continue
		}
		primary, _, _ := strings.Cut(tag, "-")
		var lang Lang
		switch {
		case primary == "*":
			lang = Default
		case catalogues[Lang(primary)] != nil:
			lang = Lang(primary)
		default:
			continue
		}
		if q > bestQ {
			best, bestQ = lang, q
		}
	}
	return best
}

// qValue reads the q parameter among an Accept-Language item's parameters;
// without one the weight is 1. ok is false for a malformed weight.
func qValue(params string) (q float64, ok bool) {
	q = 1
	if strings.TrimSpace(params) == "" {
		return q, true
	}
	for p := range strings.SplitSeq(params, ";") {
		name, value, found := strings.Cut(p, "=")
		if !found || !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil || v < 0 || v > 1 {
			return 0, false
		}
		q = v
	}
	return q, true
}

// T returns the message key in lang, formatted with args by fmt.Sprintf.
// An unsupported lang is treated as [Default]; a key missing in lang is
// taken from English; a key missing everywhere is returned unchanged.
func T(lang Lang, key string, args ...any) string {
	return lookup(catalogues, lang, key, args...)
}

// lookup is T over the given catalogues, whose En entry is the fallback.
func lookup(cats map[Lang]map[string]string, lang Lang, key string, args ...any) string {
	format, ok := cats[lang][key]
	if !ok {
		format, ok = cats[En][key]
	}
	if !ok {
		return key
	}
	if len(args) == 0 {
		return format
	}
	return fmt.Sprintf(format, args...)
}

// Has reports whether key exists in the English catalogue, the reference
// every other language follows.
func Has(key string) bool {
	_, ok := en[key]
	return ok
}
