/** Array literals as Postgres prints them (array_out). */
export type TextArray = Array<string | null | TextArray>;

const OPEN = 0x7b; // {
const CLOSE = 0x7d; // }
const QUOTE = 0x22; // "
const BACKSLASH = 0x5c;
const SPACE = 0x20;

function isSpace(code: number): boolean {
  return code === SPACE || (code >= 0x09 && code <= 0x0d);
}

/**
 * An array literal as `array_out` prints it (`{a,"b c",NULL,{d}}`, optionally preceded by bounds
 * like `[0:1]=`), into nested arrays of strings with SQL NULL as `null`. Elements stay text (the
 * caller types them). `delimiter` is the element type's (`,` for all but `box`, which uses `;`). Written
 * here rather than taken from `postgres-array` (pg-types' parser, 2.x and 3.x alike): it splits on
 * commas only, so `{(1,1),(0,0);(2,2),(1,1)}`, a box[], comes apart into six strings.
 */
export function parseTextArray(text: string, delimiter = ','): TextArray {
  const COMMA = delimiter.charCodeAt(0);
  let i = 0;
  const n = text.length;
  if (text.charCodeAt(0) !== OPEN) {
    i = text.indexOf('{');
    if (i < 0) throw new SyntaxError(`not an array literal: ${JSON.stringify(text.slice(0, 60))}`);
  }
  const stack: TextArray[] = [];
  let root: TextArray | undefined;
  let current: TextArray | undefined;
  while (i < n) {
    const code = text.charCodeAt(i);
    if (code === OPEN) {
      const nested: TextArray = [];
      if (current) {
        current.push(nested);
        stack.push(current);
      } else {
        root = nested;
      }
      current = nested;
      i++;
    } else if (code === CLOSE) {
      current = stack.pop();
      i++;
      if (!current) break;
    } else if (code === COMMA || isSpace(code)) {
      i++;
    } else if (!current) {
      break;
    } else if (code === QUOTE) {
      let value = '';
      let start = ++i;
      while (i < n) {
        const c = text.charCodeAt(i);
        if (c === QUOTE) break;
        if (c === BACKSLASH) {
          value += text.slice(start, i);
          start = ++i;
        }
        i++;
      }
      current.push(value + text.slice(start, i));
      i++;
    } else {
      let value = '';
      let start = i;
      while (i < n) {
        const c = text.charCodeAt(i);
        if (c === COMMA || c === CLOSE) break;
        if (c === BACKSLASH) {
          value += text.slice(start, i);
          start = ++i;
        }
        i++;
      }
      value += text.slice(start, i);
      let end = value.length;
      while (end > 0 && isSpace(value.charCodeAt(end - 1))) end--;
      if (end !== value.length) value = value.slice(0, end);
      // Only an unquoted NULL is SQL NULL; "NULL" in quotes is the string.
      current.push(value.length === 4 && value.toUpperCase() === 'NULL' ? null : value);
    }
  }
  if (!root || current) throw new SyntaxError(`unbalanced array literal: ${JSON.stringify(text.slice(0, 60))}`);
  return root;
}
