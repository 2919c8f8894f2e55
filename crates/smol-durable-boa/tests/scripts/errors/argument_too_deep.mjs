// expect: is nested deeper than 100 levels
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
let a = {};
for (let i = 0; i < 100000; i++) a = { a };
export default await agent("deep", { a });
