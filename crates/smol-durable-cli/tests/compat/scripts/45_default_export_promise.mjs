export const meta = { name: "default-export-promise", description: "export default <promise> resolving to an agent answer" };

export default agent("promised answer").then((answer) => ({ answer, upper: answer.toUpperCase() }));
