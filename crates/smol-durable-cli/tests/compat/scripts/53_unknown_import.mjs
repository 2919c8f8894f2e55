import fs from "node:fs";

export const meta = { name: "unknown-import", description: "Imports other than workflow:extra are refused" };

export default typeof fs;
