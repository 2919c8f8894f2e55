// Six agent calls in a row, each prompt built from the previous answer's length.
export const meta = { name: "sequential", description: "six dependent agent calls" };

let previous = "start";
const answers = [];
for (let i = 0; i < 6; i++) {
  previous = await agent(`sequential step ${i} after ${previous.length} chars`);
  answers.push(previous);
}
export default { answers };
