export const meta = { name: "unknown-option", description: "An unknown run option is refused before the run" };

export default await agent("never reached");
